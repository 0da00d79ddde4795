"""``Distinct``: approximate distinct count of a field's values over request-time windows.

Each bucket of time (a day by default) holds a HyperLogLog sketch of ``2^precision``
registers; a window's count is the estimate of the union (register-wise max) of its buckets.
Standard error is about ``1.04 / sqrt(2^precision)``: 6.5 % at precision 8, 3.3 % at 10,
1.6 % at 12; below ~2.5 · 2^precision values, linear counting makes small counts near exact.
A window counts the buckets that start inside it (edge error: up to one bucket at each edge);
nothing older than the retention counts: the buckets counted start at or after ``as_of -
retention``. The state keeps the buckets of the retention and the ``as_of`` look-back. An
``as_of`` before the newest event is refused when the bucket holding the view's end holds
events and the end is not the bucket's last millisecond: some may be later than the view,
and the answer served then did not count them.

Why not Apache DataSketches' HLL: its sketches carry an estimator accumulator (HIP) whose
value and serialized bytes depend on the order of the updates. usersignals needs a state that
is byte-identical whatever the batch boundaries (that is how replay after a crash is checked),
and plain registers — a max per register — are exactly that. Registers are kept sparse
(3 bytes per set register) until dense is smaller.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import xxhash

from usersignals.aggregations.base import Aggregation, AggregationRuntime, ApplyOut, ReadOut
from usersignals.aggregations.context import AS_OF_LOOKBACK_MS, ReadContext, retention_start
from usersignals.aggregations.params import field_name_problem, whole_number_problem
from usersignals.aggregations.rows import FieldResolver, Row
from usersignals.durations import (
    MINUTE_MS,
    DurationLike,
    coerce_duration,
    duration_problem,
    format_duration,
    to_duration,
)
from usersignals.errors import AsOfError
from usersignals.values import KEY, FieldKind

_HASH_SEED = 0x5EED
_INVERSE_POWERS = tuple(2.0**-rank for rank in range(66))  # 2^-rank for every register value


class DistinctState(msgspec.Struct, gc=False, array_like=True):
    newest: int
    buckets: dict[int, bytes]  # bucket start -> registers (dense: 2^p bytes; sparse: triples)


@dataclass(frozen=True)
class Distinct(Aggregation):
    """Approximate number of distinct values of ``of`` (e.g. ``"creator_id"``) per window."""

    of: str
    precision: int = 10
    #: The time each sketch covers: ``"1d"``, ``timedelta(hours=12)``, ``hours(12)``.
    bucket: DurationLike = "1d"

    kind = "distinct"

    def __post_init__(self) -> None:
        object.__setattr__(self, "bucket", coerce_duration(self.bucket))

    @property
    def bucket_ms(self) -> int:
        return int(to_duration(self.bucket))

    def problems(self) -> list[str]:
        problems = []
        wrong_precision = whole_number_problem("Distinct precision", self.precision, 4, 16)
        if wrong_precision:
            problems.append(wrong_precision)
        unreadable = duration_problem("Distinct bucket", self.bucket)
        if unreadable:
            problems.append(unreadable)
        elif self.bucket_ms < MINUTE_MS or self.bucket_ms % MINUTE_MS:
            problems.append("Distinct bucket must be a whole number of minutes")
        wrong_of = field_name_problem("Distinct of", self.of)
        if wrong_of:
            problems.append(wrong_of)
        return problems

    def retention_problems(self, retention_ms: int) -> list[str]:
        # The buckets counted start within the retention: one that started before it is
        # never counted, so a bucket longer than the retention answers 0 or nearly.
        if self.bucket_ms <= retention_ms:
            return []
        return [
            f"Distinct bucket {format_duration(self.bucket_ms)} must not be longer than the "
            f"signal's retention ({format_duration(retention_ms)}): the buckets counted start "
            "within it"
        ]

    def fields(self) -> set[str]:
        return {self.of}

    def field_kinds(self) -> dict[str, FieldKind]:
        return {self.of: KEY}

    def context_parameters(self) -> frozenset[str]:
        return frozenset({"window", "since", "until", "as_of"})

    def params(self) -> dict[str, Any]:
        return {
            "of": self.of,
            "precision": self.precision,
            "bucket": format_duration(self.bucket_ms),
            "standard_error": round(1.04 / math.sqrt(1 << self.precision), 4),
        }

    def compile(self, resolve: FieldResolver, retention_ms: int) -> DistinctRuntime:
        return DistinctRuntime(self, resolve, retention_ms)


class DistinctRuntime(AggregationRuntime[DistinctState]):
    def __init__(self, spec: Distinct, resolve: FieldResolver, retention_ms: int) -> None:
        self.spec = spec
        self.retention_ms = retention_ms
        self.bucket_ms = spec.bucket_ms
        self.registers = 1 << spec.precision
        self._value = resolve(spec.of)
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(DistinctState)

    def _first_kept(self, newest: int) -> int:
        size = self.bucket_ms
        return newest - newest % size - self.retention_ms - AS_OF_LOOKBACK_MS

    def apply(self, state: DistinctState | None, rows: Sequence[Row]) -> ApplyOut[DistinctState]:
        newest = max(state.newest if state else 0, rows[-1][0].ts)
        first = self._first_kept(newest)
        buckets = {b: r for b, r in state.buckets.items() if b >= first} if state else {}
        size, precision = self.bucket_ms, self.spec.precision
        shift, low_bits = 64 - precision, (1 << (64 - precision)) - 1
        touched: dict[int, dict[int, int]] = {}
        expired = 0
        for row in rows:
            ts = row[0].ts
            bucket = ts - ts % size
            if bucket < first:
                expired += 1
                continue
            value = self._value(row)
            if value is None:
                continue
            registers = touched.get(bucket)
            if registers is None:
                registers = touched[bucket] = self._sparse(buckets.get(bucket))
            hashed = xxhash.xxh3_64_intdigest(str(value).encode(), _HASH_SEED)
            index = hashed >> shift
            rank = shift - (hashed & low_bits).bit_length() + 1
            if rank > registers.get(index, 0):
                registers[index] = rank
        for bucket, registers in touched.items():
            buckets[bucket] = self._pack(registers)
        return ApplyOut(DistinctState(newest, buckets), expired)

    def merge(self, a: DistinctState, b: DistinctState) -> DistinctState:
        newest = max(a.newest, b.newest)
        first = self._first_kept(newest)
        buckets = {k: v for k, v in a.buckets.items() if k >= first}
        for bucket, registers in b.buckets.items():
            if bucket < first:
                continue
            have = buckets.get(bucket)
            buckets[bucket] = (
                registers if have is None else self._compact(self._union([have, registers]))
            )
        return DistinctState(newest, buckets)

    def read(self, state: DistinctState | None, context: ReadContext) -> ReadOut:
        if state is None:
            return ReadOut({"estimate": 0}, None)
        newest = state.newest
        end = context.end(newest)
        view = context.view_time(newest)
        start = retention_start(view, self.retention_ms)
        window_start = context.start(newest)
        if window_start is not None:
            start = max(start, window_start)
        if start < self._first_kept(newest):
            earliest = self._first_kept(newest) + self.retention_ms
            raise AsOfError("", view, earliest, "its buckets from then expired")
        if not state.buckets:  # after the check, as Count/Sum's read (windowed.py)
            return ReadOut({"estimate": 0}, None)
        straddled = end - end % self.bucket_ms
        if (
            end < newest
            and start <= straddled  # a bucket starting before the view is not counted
            and end < straddled + self.bucket_ms - 1
            and straddled in state.buckets
        ):
            # The view ends (as_of, or until) before newer events, inside a bucket that may
            # hold some of them: an answer then did not count them, and this one cannot
            # leave them out.
            why = "events later than the view's end may share its bucket"
            raise AsOfError("", end, straddled + self.bucket_ms - 1, why)
        chosen = [
            registers for bucket, registers in state.buckets.items() if start <= bucket <= end
        ]
        estimate = self.estimate(self._union(chosen)) if chosen else 0.0
        return ReadOut({"estimate": round(estimate)}, min(state.newest, end))

    def estimate(self, registers: bytearray) -> float:
        m = self.registers
        zeros = registers.count(0)
        harmonic = sum(map(_INVERSE_POWERS.__getitem__, registers))
        alpha = 0.7213 / (1 + 1.079 / m) if m >= 128 else {16: 0.673, 32: 0.697, 64: 0.709}[m]
        raw = alpha * m * m / harmonic
        if raw <= 2.5 * m and zeros:
            return m * math.log(m / zeros)
        return raw

    def _sparse(self, packed: bytes | None) -> dict[int, int]:
        """Set registers as ``{index: rank}``: cheap to update while a user has few values."""
        if not packed:
            return {}
        if len(packed) == self.registers:
            return {index: rank for index, rank in enumerate(packed) if rank}
        return {
            packed[offset] << 8 | packed[offset + 1]: packed[offset + 2]
            for offset in range(0, len(packed), 3)
        }

    def _dense(self, packed: bytes | None) -> bytearray:
        registers = bytearray(self.registers)
        if packed is None:
            return registers
        if len(packed) == self.registers:
            registers[:] = packed
            return registers
        for offset in range(0, len(packed), 3):
            registers[packed[offset] << 8 | packed[offset + 1]] = packed[offset + 2]
        return registers

    def _pack(self, registers: dict[int, int]) -> bytes:
        """Sparse triples (index high, index low, rank) in index order, or dense when smaller."""
        if 3 * len(registers) >= self.registers:
            dense = bytearray(self.registers)
            for index, rank in registers.items():
                dense[index] = rank
            return bytes(dense)
        return bytes(
            [x for index in sorted(registers) for x in (index >> 8, index & 0xFF, registers[index])]
        )

    def _compact(self, registers: bytearray) -> bytes:
        return self._pack({index: rank for index, rank in enumerate(registers) if rank})

    def _union(self, packed: Iterable[bytes]) -> bytearray:
        union = bytearray(self.registers)
        for registers in packed:
            union = bytearray(map(max, union, self._dense(registers)))
        return union

    def encode(self, state: DistinctState) -> bytes:
        return self._encoder.encode(
            DistinctState(state.newest, dict(sorted(state.buckets.items())))
        )

    def decode(self, data: bytes) -> DistinctState:
        return self._decoder.decode(data)
