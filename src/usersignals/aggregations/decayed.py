"""Time-decayed aggregations: ``DecayedScores`` (a top-k interest profile) and ``MeanVector``.

Both keep exact fixed-point integer sums per time bucket (:mod:`usersignals.aggregations.decay`
explains the buckets, retention and ``as_of``). Stored format 2 (buckets, with each bucket's
newest event time) replaced format 1 (epochs of 16 half-lives, no per-bucket times); a format
1 state is migrated when read: each epoch's sum moves to the last bucket of the epoch up to the
state's newest event, and that bucket's newest time is taken as the state's newest event (so
an earlier ``as_of`` refuses rather than guesses).

Sums are Python integers and never overflow; the codec writes one that leaves the 64-bit range
of msgpack integers as signed big-endian bytes instead.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from usersignals.aggregations.base import Aggregation, AggregationRuntime, ApplyOut, ReadOut
from usersignals.aggregations.context import ReadContext
from usersignals.aggregations.decay import DecayBuckets, Tops
from usersignals.aggregations.params import field_name_problem, number_problem, whole_number_problem
from usersignals.aggregations.rows import FieldResolver, Row
from usersignals.durations import (
    DurationLike,
    coerce_duration,
    duration_problem,
    format_duration,
    to_duration,
)
from usersignals.values import KEY, FieldKind, vector

EPOCH_HALF_LIVES = 16  # format 1 only: the epoch its sums were relative to
# Fixed-point fraction bits: of score terms, of MeanVector's per-event scale (weight times
# growth), and of the vector components, each quantized once per distinct vector.
_SCORE_BITS = 20
_SCALE_BITS = 16
_COMPONENT_BITS = 16
_MAX_WEIGHT = 1_000
_INT64 = 1 << 63
_QUANTIZED_CACHE = 100_000


def needs_packing(values: list[int]) -> bool:
    return bool(values) and (max(values) >= _INT64 or min(values) < -_INT64)


def pack_ints(values: list[int]) -> list[int | bytes]:
    """Integers for msgpack: any outside the int64 range as signed big-endian bytes."""
    return [
        v if -_INT64 <= v < _INT64 else v.to_bytes((v.bit_length() + 8) // 8, "big", signed=True)
        for v in values
    ]


def unpack_ints(values: list[int | bytes]) -> list[int]:
    return [v if isinstance(v, int) else int.from_bytes(v, "big", signed=True) for v in values]


def _decay_problems(
    kind: str, half_life: object, weights: Mapping[str, float], default: float
) -> list[str]:
    unreadable = duration_problem(f"{kind} half_life", half_life)
    if unreadable:
        problems = [unreadable]
    else:
        problems = [] if to_duration(half_life) >= 1000 else ["half_life must be at least 1s"]
    if not isinstance(weights, Mapping):
        return [*problems, f"{kind} weights must map actions to numbers, not {weights!r}"]
    for name, weight in (*weights.items(), ("default_weight", default)):
        wrong = number_problem(f"{kind} weight of {name!r}", weight, _MAX_WEIGHT)
        if wrong:
            problems.append(wrong)
    return problems


def _decay_params(
    half_life: DurationLike, weights: Mapping[str, float], default: float
) -> dict[str, Any]:
    return {
        "half_life": format_duration(to_duration(half_life)),
        "weights": dict(sorted(weights.items())),
        "default_weight": default,
    }


# --------------------------------------------------------------------------- DecayedScores


ScoreCells = dict[tuple[Any, int], int]  # (key, bucket) -> fixed-point sum


class ScoresState(msgspec.Struct, gc=False):
    newest: int
    cells: ScoreCells
    tops: Tops = {}


class _EncodedScores(msgspec.Struct, array_like=True, tag="b2"):
    """Format 2: sums per (key, bucket) and each bucket's newest event time."""

    newest: int
    first_bucket: int
    keys: list[Any]
    triples: list[int | bytes]  # (key index, bucket - first_bucket, sum), flattened
    tops: list[int]  # (bucket - first_bucket, newest time - bucket start), flattened
    big: bool = False  # some sums are bytes (outside int64)


class _EncodedScoresV1(msgspec.Struct, array_like=True):
    newest: int
    first_epoch: int
    keys: list[Any]
    pairs: list[int | bytes]  # (key index, epoch - first_epoch, sum) triples, flattened
    big: bool = False


@dataclass(frozen=True)
class DecayedScores(Aggregation):
    """Per-key decayed scores (``key`` e.g. ``"category"``), read as a top-k profile."""

    key: str
    #: ``timedelta(days=7)``, ``"7d"`` or ``days(7)``.
    half_life: DurationLike = "7d"
    weights: Mapping[str, float] = field(default_factory=dict)
    default_weight: float = 1.0
    top_k: int = 20

    kind = "decayed_scores"

    def __post_init__(self) -> None:
        object.__setattr__(self, "half_life", coerce_duration(self.half_life))

    def problems(self) -> list[str]:
        problems = _decay_problems(
            "DecayedScores", self.half_life, self.weights, self.default_weight
        )
        wrong_k = whole_number_problem("DecayedScores top_k", self.top_k, 1, 10_000)
        wrong_key = field_name_problem("DecayedScores key", self.key)
        problems += [problem for problem in (wrong_k, wrong_key) if problem]
        return problems

    def fields(self) -> set[str]:
        return {self.key, "action"}

    def field_kinds(self) -> dict[str, FieldKind]:
        return {self.key: KEY}

    def context_parameters(self) -> frozenset[str]:
        return frozenset({"limit", "exclude", "as_of"})

    def params(self) -> dict[str, Any]:
        return {
            "key": self.key,
            **_decay_params(self.half_life, self.weights, self.default_weight),
            "top_k": self.top_k,
        }

    def compile(self, resolve: FieldResolver, retention_ms: int) -> ScoresRuntime:
        return ScoresRuntime(self, resolve, retention_ms)


class ScoresRuntime(AggregationRuntime[ScoresState]):
    def __init__(self, spec: DecayedScores, resolve: FieldResolver, retention_ms: int) -> None:
        self.spec = spec
        self.decay = DecayBuckets(int(to_duration(spec.half_life)), retention_ms)
        self._key = resolve(spec.key)
        self._weights = dict(spec.weights)
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(_EncodedScores)
        self._decoder_v1 = msgspec.msgpack.Decoder(_EncodedScoresV1)

    def apply(self, state: ScoresState | None, rows: Sequence[Row]) -> ApplyOut[ScoresState]:
        decay = self.decay
        newest = max(state.newest if state else 0, rows[-1][0].ts)
        first = decay.first_kept(newest)
        cells: ScoreCells = {}
        tops: Tops = {}
        if state is not None:
            tops = {b: t for b, t in state.tops.items() if b >= first}
            if len(tops) == len(state.tops):
                cells = dict(state.cells)
            else:
                cells = {k: v for k, v in state.cells.items() if k[1] >= first}
        size = decay.bucket_ms
        weights, default = self._weights, self.spec.default_weight
        expired = 0
        for row in rows:
            event = row[0]
            ts = event.ts
            bucket = ts // size
            if bucket < first:
                expired += 1
                continue
            key = self._key(row)
            weight = weights.get(event.action, default)
            if key is None or not weight:
                continue
            term = round(math.ldexp(weight * decay.growth(ts, bucket), _SCORE_BITS))
            cell = (key, bucket)
            cells[cell] = cells.get(cell, 0) + term
            if tops.get(bucket, -1) < ts:
                tops[bucket] = ts
        return ApplyOut(ScoresState(newest, cells, tops), expired)

    def merge(self, a: ScoresState, b: ScoresState) -> ScoresState:
        newest = max(a.newest, b.newest)
        first = self.decay.first_kept(newest)
        cells = {k: v for k, v in a.cells.items() if k[1] >= first}
        for cell, value in b.cells.items():
            if cell[1] >= first:
                cells[cell] = cells.get(cell, 0) + value
        tops = {k: v for k, v in a.tops.items() if k >= first}
        for bucket, top in b.tops.items():
            if bucket >= first and tops.get(bucket, -1) < top:
                tops[bucket] = top
        return ScoresState(newest, cells, tops)

    def scores(self, state: ScoresState, view_ms: int) -> dict[Any, float]:
        """Every key's score at ``view_ms`` (raises AsOfError when that cannot be exact)."""
        first, last = self.decay.counted(state.newest, state.tops, view_ms)
        factors: dict[int, float] = {}
        scores: dict[Any, float] = {}
        for (key, bucket), value in state.cells.items():
            if not first <= bucket <= last:
                continue
            factor = factors.get(bucket)
            if factor is None:
                factor = factors[bucket] = math.ldexp(
                    self.decay.decay_to(bucket, view_ms), -_SCORE_BITS
                )
            scores[key] = scores.get(key, 0.0) + value * factor
        return scores

    def read(self, state: ScoresState | None, context: ReadContext) -> ReadOut:
        if state is None:
            return ReadOut([], None)
        view = context.view_time(state.newest)
        scores = self.scores(state, view)
        exclude = context.exclude
        limit = context.limit or self.spec.top_k
        # The top k without sorting every key (a busy user has hundreds). Equal scores are
        # ordered by key, descending; keys of mixed types fall back to their reprs.
        candidates = [(score, key) for key, score in scores.items() if key not in exclude]
        try:
            top = heapq.nlargest(limit, candidates)
        except TypeError:
            top = heapq.nlargest(limit, candidates, key=lambda pair: (pair[0], repr(pair[1])))
        # Full precision: JSON carries the shortest repr that round-trips the float.
        # Not capped at `until`: this read ignores it and counts every event up to the view.
        profile = [{"key": key, "score": score} for score, key in top]
        return ReadOut(profile, min(state.newest, view))

    def encode(self, state: ScoresState) -> bytes:
        try:
            cells = sorted(state.cells.items(), key=lambda item: (item[0][1], item[0][0]))
        except TypeError:  # keys of mixed types: order them by their reprs
            cells = sorted(state.cells.items(), key=lambda item: (item[0][1], repr(item[0][0])))
        first = min(state.tops, default=0)
        size = self.decay.bucket_ms
        index: dict[Any, int] = {}
        triples: list[int] = []
        for (key, bucket), value in cells:
            triples += (index.setdefault(key, len(index)), bucket - first, value)
        tops: list[int] = []
        for bucket, top in sorted(state.tops.items()):
            tops += (bucket - first, top - bucket * size)
        big = needs_packing(triples)
        packed: list[int | bytes] = pack_ints(triples) if big else triples  # type: ignore[assignment]
        return self._encoder.encode(
            _EncodedScores(state.newest, first, list(index), packed, tops, big)
        )

    def decode(self, data: bytes) -> ScoresState:
        try:
            encoded = self._decoder.decode(data)
        except msgspec.ValidationError:
            return self._migrate(self._decoder_v1.decode(data))
        keys, first, size = encoded.keys, encoded.first_bucket, self.decay.bucket_ms
        triples: list[Any] = unpack_ints(encoded.triples) if encoded.big else encoded.triples
        cells: ScoreCells = {
            (keys[triples[i]], first + triples[i + 1]): triples[i + 2]
            for i in range(0, len(triples), 3)
        }
        flat = encoded.tops
        tops = {
            first + flat[i]: (first + flat[i]) * size + flat[i + 1] for i in range(0, len(flat), 2)
        }
        return ScoresState(encoded.newest, cells, tops)

    def _migrate(self, old: _EncodedScoresV1) -> ScoresState:
        """A format 1 state: each epoch's sum moves to the bucket holding the epoch's start."""
        pairs: list[Any] = unpack_ints(old.pairs) if old.big else old.pairs
        cells: ScoreCells = {}
        tops: Tops = {}
        for i in range(0, len(pairs), 3):
            bucket, value = _epoch_to_bucket(
                self.decay, old.first_epoch + pairs[i + 1], pairs[i + 2], old.newest
            )
            cell = (old.keys[pairs[i]], bucket)
            cells[cell] = cells.get(cell, 0) + value
            tops[bucket] = old.newest
        return ScoresState(old.newest, cells, tops)


def _epoch_to_bucket(decay: DecayBuckets, epoch: int, value: int, newest: int) -> tuple[int, int]:
    """A format 1 epoch sum (relative to the epoch's start) as the sum of one bucket.

    The epoch's events are taken to be in its last bucket up to the state's newest event: a
    format 1 read counted the whole epoch, and this keeps counting it as long as possible.
    """
    epoch_ms = EPOCH_HALF_LIVES * decay.half_life
    start = epoch * epoch_ms
    bucket = min(newest, start + epoch_ms - 1) // decay.bucket_ms
    return bucket, round(value * decay.growth(start, bucket))


# ------------------------------------------------------------------------------ MeanVector


class VectorState(msgspec.Struct, gc=False):
    newest: int
    # bucket -> [Σ scale, Σ scale · quantized component...]: exact integers
    buckets: dict[int, list[int]]
    tops: Tops = {}


class _EncodedVector(msgspec.Struct, array_like=True, tag="b2"):
    """Format 2: sums per bucket and each bucket's newest event time (ms after its start)."""

    newest: int
    buckets: dict[int, list[int | bytes]]
    tops: dict[int, int]
    big: bool = False


class _EncodedVectorV1(msgspec.Struct, array_like=True):
    newest: int
    epochs: dict[int, list[int | bytes]]
    big: bool = False


@dataclass(frozen=True)
class MeanVector(Aggregation):
    """The decayed, weighted mean of a vector field: a user embedding from engaged items.

    Components are quantized to 2^-16 and each event's scale (weight times decay) to 2^-16;
    the sums over those are exact. With ``n`` events of positive weights counted, the reported
    weight is within ``n · 2^-17`` of the exact decayed weight ``W``, and each component within
    ``2^-17 + n · 2^-16 · max|component| / W`` of the exact weighted mean.
    """

    of: str
    dim: int
    #: ``timedelta(days=7)``, ``"7d"`` or ``days(7)``.
    half_life: DurationLike = "7d"
    weights: Mapping[str, float] = field(default_factory=dict)
    default_weight: float = 1.0

    kind = "mean_vector"

    def __post_init__(self) -> None:
        object.__setattr__(self, "half_life", coerce_duration(self.half_life))

    def problems(self) -> list[str]:
        problems = _decay_problems("MeanVector", self.half_life, self.weights, self.default_weight)
        wrong_dim = whole_number_problem("MeanVector dim", self.dim, 1, 4096)
        wrong_of = field_name_problem("MeanVector of", self.of)
        problems += [problem for problem in (wrong_dim, wrong_of) if problem]
        return problems

    def fields(self) -> set[str]:
        return {self.of, "action"}

    def field_kinds(self) -> dict[str, FieldKind]:
        return {self.of: vector(self.dim)}

    def context_parameters(self) -> frozenset[str]:
        return frozenset({"as_of"})

    def params(self) -> dict[str, Any]:
        return {
            "of": self.of,
            "dim": self.dim,
            **_decay_params(self.half_life, self.weights, self.default_weight),
        }

    def compile(self, resolve: FieldResolver, retention_ms: int) -> VectorRuntime:
        return VectorRuntime(self, resolve, retention_ms)


class VectorRuntime(AggregationRuntime[VectorState]):
    def __init__(self, spec: MeanVector, resolve: FieldResolver, retention_ms: int) -> None:
        self.spec = spec
        self.decay = DecayBuckets(int(to_duration(spec.half_life)), retention_ms)
        self._vector = resolve(spec.of)
        self._weights = dict(spec.weights)
        # id(vector) -> (vector, quantized): the same item's vector object comes back for every
        # event of a micro-batch, so each is quantized once. Holding the vector keeps its id
        # from being reused while cached.
        self._quantized: dict[int, tuple[Any, list[int]]] = {}
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(_EncodedVector)
        self._decoder_v1 = msgspec.msgpack.Decoder(_EncodedVectorV1)

    def _quantize(self, vector: Any) -> list[int] | None:
        cached = self._quantized.get(id(vector))
        if cached is not None and cached[0] is vector:
            return cached[1]
        if not isinstance(vector, list | tuple) or len(vector) != self.spec.dim:
            return None
        try:
            quantized = [round(math.ldexp(component, _COMPONENT_BITS)) for component in vector]
        except (TypeError, ValueError, OverflowError):
            return None  # not numbers, or not finite: the event adds nothing
        if len(self._quantized) >= _QUANTIZED_CACHE:
            self._quantized.clear()
        self._quantized[id(vector)] = (vector, quantized)
        return quantized

    def apply(self, state: VectorState | None, rows: Sequence[Row]) -> ApplyOut[VectorState]:
        decay = self.decay
        newest = max(state.newest if state else 0, rows[-1][0].ts)
        first = decay.first_kept(newest)
        buckets: dict[int, list[int]] = {}
        tops: Tops = {}
        if state is not None:
            buckets = {b: sums for b, sums in state.buckets.items() if b >= first}
            tops = {b: top for b, top in state.tops.items() if b >= first}
        size = decay.bucket_ms
        weights, default = self._weights, self.spec.default_weight
        expired = 0
        for row in rows:
            event = row[0]
            ts = event.ts
            bucket = ts // size
            if bucket < first:
                expired += 1
                continue
            weight = weights.get(event.action, default)
            quantized = self._quantize(self._vector(row)) if weight else None
            if quantized is None:
                continue
            scale = round(math.ldexp(weight * decay.growth(ts, bucket), _SCALE_BITS))
            sums = buckets.get(bucket)
            if sums is None:
                buckets[bucket] = [scale, *[q * scale for q in quantized]]
            else:
                buckets[bucket] = [
                    sums[0] + scale,
                    *[s + q * scale for s, q in zip(sums[1:], quantized, strict=True)],
                ]
            if tops.get(bucket, -1) < ts:
                tops[bucket] = ts
        return ApplyOut(VectorState(newest, buckets, tops), expired)

    def merge(self, a: VectorState, b: VectorState) -> VectorState:
        newest = max(a.newest, b.newest)
        first = self.decay.first_kept(newest)
        buckets = {e: sums for e, sums in a.buckets.items() if e >= first}
        for bucket, sums in b.buckets.items():
            if bucket >= first:
                have = buckets.get(bucket)
                buckets[bucket] = (
                    sums if have is None else [x + y for x, y in zip(have, sums, strict=True)]
                )
        tops = {k: v for k, v in a.tops.items() if k >= first}
        for bucket, top in b.tops.items():
            if bucket >= first and tops.get(bucket, -1) < top:
                tops[bucket] = top
        return VectorState(newest, buckets, tops)

    def read(self, state: VectorState | None, context: ReadContext) -> ReadOut:
        if state is None:
            return ReadOut({"vector": None, "weight": 0.0}, None)
        view = context.view_time(state.newest)
        # Before the empty answer, as Count/Sum's read (windowed.py) does.
        first, last = self.decay.counted(state.newest, state.tops, view)
        if not state.buckets:
            return ReadOut({"vector": None, "weight": 0.0}, None)
        totals = [0.0] * (self.spec.dim + 1)
        for bucket, sums in state.buckets.items():
            if first <= bucket <= last:
                factor = math.ldexp(self.decay.decay_to(bucket, view), -_SCALE_BITS)
                totals = [total + value * factor for total, value in zip(totals, sums, strict=True)]
        weight = totals[0]
        scale = math.ldexp(1.0, -_COMPONENT_BITS) / weight if weight else 0.0
        vector = [value * scale for value in totals[1:]] if weight else None
        # Full precision: JSON carries the shortest repr that round-trips the float.
        # Not capped at `until`: this read ignores it and counts every event up to the view.
        return ReadOut({"vector": vector, "weight": weight}, min(state.newest, view))

    def encode(self, state: VectorState) -> bytes:
        buckets = dict(sorted(state.buckets.items()))
        size = self.decay.bucket_ms
        tops = {bucket: top - bucket * size for bucket, top in sorted(state.tops.items())}
        if any(needs_packing(sums) for sums in buckets.values()):
            packed = {bucket: pack_ints(sums) for bucket, sums in buckets.items()}
            return self._encoder.encode(_EncodedVector(state.newest, packed, tops, big=True))
        return self._encoder.encode(_EncodedVector(state.newest, buckets, tops))  # type: ignore[arg-type]

    def decode(self, data: bytes) -> VectorState:
        try:
            encoded = self._decoder.decode(data)
        except msgspec.ValidationError:
            return self._migrate(self._decoder_v1.decode(data))
        size = self.decay.bucket_ms
        tops = {bucket: bucket * size + offset for bucket, offset in encoded.tops.items()}
        if encoded.big:
            buckets = {b: unpack_ints(sums) for b, sums in encoded.buckets.items()}
            return VectorState(encoded.newest, buckets, tops)
        return VectorState(encoded.newest, encoded.buckets, tops)  # type: ignore[arg-type]

    def _migrate(self, old: _EncodedVectorV1) -> VectorState:
        """A format 1 state: each epoch's sums move to the bucket holding the epoch's start."""
        buckets: dict[int, list[int]] = {}
        tops: Tops = {}
        for epoch, packed in old.epochs.items():
            sums = unpack_ints(packed) if old.big else packed
            moved = [_epoch_to_bucket(self.decay, epoch, value, old.newest) for value in sums]  # type: ignore[arg-type]
            bucket = moved[0][0]
            have = buckets.get(bucket, [0] * len(moved))
            buckets[bucket] = [x + value for x, (_, value) in zip(have, moved, strict=True)]
            tops[bucket] = old.newest
        return VectorState(old.newest, buckets, tops)
