"""Time-decayed aggregations: ``DecayedScores`` (a top-k interest profile) and ``MeanVector``.

A decayed sum at time ``T`` is ``Σ w_i · 2^(-(T - t_i) / half_life)``. Kept naively as a float
rescaled at every update, its last bits would depend on the order of the additions, so a replay
with other batch boundaries would not reproduce the state exactly. Instead, time is cut into
*epochs* of 16 half-lives, and each event adds the integer ``round(w · 2^F · 2^((t - e)/h))``
to the sum of its epoch (``e`` the epoch's start): integer addition is exact and associative,
and the decay to ``T`` is applied only when reading. Each term stays below ``|w| · 2^(F + 16)``.

Retention works a whole epoch at a time: an epoch is dropped once it ends more than the
retention before the newest event, and an event is accepted only into a kept epoch.

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
from usersignals.aggregations.rows import FieldResolver, Row
from usersignals.durations import (
    DurationLike,
    coerce_duration,
    duration_problem,
    format_duration,
    to_duration,
)
from usersignals.values import KEY, FieldKind, vector

EPOCH_HALF_LIVES = 16
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


@dataclass(frozen=True)
class _Decay:
    half_life: int
    retention_ms: int

    @property
    def epoch_ms(self) -> int:
        return EPOCH_HALF_LIVES * self.half_life

    def first_kept_epoch(self, newest: int) -> int:
        """Epochs ending at or before ``newest - retention`` are gone."""
        return (newest - self.retention_ms) // self.epoch_ms

    def growth(self, ts: int, epoch: int) -> float:
        """``2^((ts - epoch start) / half_life)``, in [1, 2^16).

        ``epoch`` must be the epoch holding ``ts``; the growth is then bounded."""
        return float(2.0 ** ((ts - epoch * self.epoch_ms) / self.half_life))

    def decay_to(self, epoch: int, reference_ms: int) -> float:
        """The factor that turns an epoch's integer sum into its value at ``reference_ms``.

        An epoch that starts after ``reference_ms`` holds only events after it, which a view
        as of that time does not include: 0. (Scaling them would also overflow a float when
        the reference is many half-lives earlier, e.g. ``as_of=2000-01-01``.)
        """
        start = epoch * self.epoch_ms
        if start > reference_ms:
            return 0.0
        return float(2.0 ** ((start - reference_ms) / self.half_life))


def _decay_problems(
    kind: str, half_life: object, weights: Mapping[str, float], default: float
) -> list[str]:
    unreadable = duration_problem(f"{kind} half_life", half_life)
    if unreadable:
        problems = [unreadable]
    else:
        problems = [] if to_duration(half_life) >= 1000 else ["half_life must be at least 1s"]
    for name, weight in (*weights.items(), ("default_weight", default)):
        if not -_MAX_WEIGHT <= weight <= _MAX_WEIGHT:
            problems.append(f"weight of {name!r} must be within ±{_MAX_WEIGHT}")
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


ScoreCells = dict[tuple[Any, int], int]  # (key, epoch) -> fixed-point sum


class ScoresState(msgspec.Struct, gc=False):
    newest: int
    cells: ScoreCells

    def oldest_epoch(self) -> int:
        # Cells of one user span one or two epochs: scanning distinct epochs is cheap in C.
        return min({epoch for _, epoch in self.cells}, default=0)


class _EncodedScores(msgspec.Struct, array_like=True):
    newest: int
    first_epoch: int
    keys: list[Any]
    pairs: list[int | bytes]  # (key index, epoch - first_epoch, sum) triples, flattened
    big: bool = False  # some sums are bytes (outside int64)


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
        if not 1 <= self.top_k <= 10_000:
            problems.append("DecayedScores top_k must be between 1 and 10000")
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
        self.decay = _Decay(int(to_duration(spec.half_life)), retention_ms)
        self._key = resolve(spec.key)
        self._weights = dict(spec.weights)
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(_EncodedScores)

    def apply(self, state: ScoresState | None, rows: Sequence[Row]) -> ApplyOut[ScoresState]:
        decay = self.decay
        newest = max(state.newest if state else 0, rows[-1][0].ts)
        first = decay.first_kept_epoch(newest)
        cells: ScoreCells = {}
        if state is not None:
            if state.oldest_epoch() >= first:
                cells = dict(state.cells)
            else:
                cells = {k: v for k, v in state.cells.items() if k[1] >= first}
        epoch_ms = decay.epoch_ms
        weights, default = self._weights, self.spec.default_weight
        expired = 0
        for row in rows:
            event = row[0]
            epoch = event.ts // epoch_ms
            if epoch < first:
                expired += 1
                continue
            key = self._key(row)
            weight = weights.get(event.action, default)
            if key is None or not weight:
                continue
            term = round(math.ldexp(weight * decay.growth(event.ts, epoch), _SCORE_BITS))
            cell = (key, epoch)
            cells[cell] = cells.get(cell, 0) + term
        return ApplyOut(ScoresState(newest, cells), expired)

    def merge(self, a: ScoresState, b: ScoresState) -> ScoresState:
        newest = max(a.newest, b.newest)
        first = self.decay.first_kept_epoch(newest)
        cells = {k: v for k, v in a.cells.items() if k[1] >= first}
        for cell, value in b.cells.items():
            if cell[1] >= first:
                cells[cell] = cells.get(cell, 0) + value
        return ScoresState(newest, cells)

    def scores(self, state: ScoresState, reference_ms: int) -> dict[Any, float]:
        factors: dict[int, float] = {}
        scores: dict[Any, float] = {}
        for (key, epoch), value in state.cells.items():
            factor = factors.get(epoch)
            if factor is None:
                factor = factors[epoch] = math.ldexp(
                    self.decay.decay_to(epoch, reference_ms), -_SCORE_BITS
                )
            scores[key] = scores.get(key, 0.0) + value * factor
        return scores

    def read(self, state: ScoresState | None, context: ReadContext) -> ReadOut:
        if state is None:
            return ReadOut([], None)
        scores = self.scores(state, context.reference_ms)
        exclude = context.exclude
        limit = context.limit or self.spec.top_k
        # The top k without sorting every key (a busy user has hundreds). Equal scores are
        # ordered by key, descending; keys of mixed types fall back to their reprs.
        candidates = [(score, key) for key, score in scores.items() if key not in exclude]
        try:
            top = heapq.nlargest(limit, candidates)
        except TypeError:
            top = heapq.nlargest(limit, candidates, key=lambda pair: (pair[0], repr(pair[1])))
        ranked = [(key, score) for score, key in top]
        return ReadOut(
            [{"key": key, "score": round(score, 6)} for key, score in ranked],
            min(state.newest, context.end_ms),
        )

    def encode(self, state: ScoresState) -> bytes:
        try:
            cells = sorted(state.cells.items(), key=lambda item: (item[0][1], item[0][0]))
        except TypeError:  # keys of mixed types: order them by their reprs
            cells = sorted(state.cells.items(), key=lambda item: (item[0][1], repr(item[0][0])))
        first = min((cell[1] for cell, _ in cells), default=0)
        index: dict[Any, int] = {}
        pairs: list[int] = []
        for (key, epoch), value in cells:
            pairs += (index.setdefault(key, len(index)), epoch - first, value)
        if needs_packing(pairs):
            return self._encoder.encode(
                _EncodedScores(state.newest, first, list(index), pack_ints(pairs), big=True)
            )
        encoded = _EncodedScores(state.newest, first, list(index), pairs)  # type: ignore[arg-type]
        return self._encoder.encode(encoded)

    def decode(self, data: bytes) -> ScoresState:
        encoded = self._decoder.decode(data)
        keys, first = encoded.keys, encoded.first_epoch
        pairs: list[Any] = unpack_ints(encoded.pairs) if encoded.big else encoded.pairs
        cells: ScoreCells = {
            (keys[pairs[i]], first + pairs[i + 1]): pairs[i + 2] for i in range(0, len(pairs), 3)
        }
        return ScoresState(encoded.newest, cells)


# ------------------------------------------------------------------------------ MeanVector


class VectorState(msgspec.Struct, gc=False):
    newest: int
    # epoch -> [Σ scale, Σ scale · quantized component...]: exact integers
    epochs: dict[int, list[int]]


class _EncodedVector(msgspec.Struct, array_like=True):
    newest: int
    epochs: dict[int, list[int | bytes]]
    big: bool = False


@dataclass(frozen=True)
class MeanVector(Aggregation):
    """The decayed, weighted mean of a vector field: a user embedding from engaged items.

    Components are quantized to 2^-16 and each event's scale to 2^-16 of itself; the mean is
    exact over those, so it is within ~1e-5 of the float mean for unit-scale embeddings.
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
        if not 1 <= self.dim <= 4096:
            problems.append("MeanVector dim must be between 1 and 4096")
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
        self.decay = _Decay(int(to_duration(spec.half_life)), retention_ms)
        self._vector = resolve(spec.of)
        self._weights = dict(spec.weights)
        # id(vector) -> (vector, quantized): the same item's vector object comes back for every
        # event of a micro-batch, so each is quantized once. Holding the vector keeps its id
        # from being reused while cached.
        self._quantized: dict[int, tuple[Any, list[int]]] = {}
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(_EncodedVector)

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
        first = decay.first_kept_epoch(newest)
        epochs = {e: sums for e, sums in state.epochs.items() if e >= first} if state else {}
        epoch_ms = decay.epoch_ms
        weights, default = self._weights, self.spec.default_weight
        expired = 0
        for row in rows:
            event = row[0]
            epoch = event.ts // epoch_ms
            if epoch < first:
                expired += 1
                continue
            weight = weights.get(event.action, default)
            quantized = self._quantize(self._vector(row)) if weight else None
            if quantized is None:
                continue
            scale = round(math.ldexp(weight * decay.growth(event.ts, epoch), _SCALE_BITS))
            sums = epochs.get(epoch)
            if sums is None:
                epochs[epoch] = [scale, *[q * scale for q in quantized]]
            else:
                epochs[epoch] = [
                    sums[0] + scale,
                    *[s + q * scale for s, q in zip(sums[1:], quantized, strict=True)],
                ]
        return ApplyOut(VectorState(newest, epochs), expired)

    def merge(self, a: VectorState, b: VectorState) -> VectorState:
        newest = max(a.newest, b.newest)
        first = self.decay.first_kept_epoch(newest)
        epochs = {e: sums for e, sums in a.epochs.items() if e >= first}
        for epoch, sums in b.epochs.items():
            if epoch >= first:
                have = epochs.get(epoch)
                epochs[epoch] = (
                    sums if have is None else [x + y for x, y in zip(have, sums, strict=True)]
                )
        return VectorState(newest, epochs)

    def read(self, state: VectorState | None, context: ReadContext) -> ReadOut:
        if state is None or not state.epochs:
            return ReadOut({"vector": None, "weight": 0.0}, None)
        reference = context.reference_ms
        totals = [0.0] * (self.spec.dim + 1)
        for epoch, sums in state.epochs.items():
            factor = math.ldexp(self.decay.decay_to(epoch, reference), -_SCALE_BITS)
            totals = [total + value * factor for total, value in zip(totals, sums, strict=True)]
        weight = totals[0]
        scale = math.ldexp(1.0, -_COMPONENT_BITS) / weight if weight else 0.0
        vector = [value * scale for value in totals[1:]] if weight else None
        return ReadOut(
            {"vector": vector, "weight": round(weight, 6)}, min(state.newest, context.end_ms)
        )

    def encode(self, state: VectorState) -> bytes:
        epochs = dict(sorted(state.epochs.items()))
        if any(needs_packing(sums) for sums in epochs.values()):
            packed = {epoch: pack_ints(sums) for epoch, sums in epochs.items()}
            return self._encoder.encode(_EncodedVector(state.newest, packed, big=True))
        return self._encoder.encode(_EncodedVector(state.newest, epochs))  # type: ignore[arg-type]

    def decode(self, data: bytes) -> VectorState:
        encoded = self._decoder.decode(data)
        if encoded.big:
            return VectorState(
                encoded.newest, {e: unpack_ints(sums) for e, sums in encoded.epochs.items()}
            )
        return VectorState(encoded.newest, encoded.epochs)  # type: ignore[arg-type]
