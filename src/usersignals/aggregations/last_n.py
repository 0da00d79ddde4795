"""``LastN``: the enriched engagement sequence — a user's last n events with chosen fields.

State: entries ``(ts, tie, *kept values)`` newest first. ``tie`` is the CRC-32 of the event id,
so that events with equal times have one fixed order whatever the batches: the state is the
top n of the user's events by ``(ts, tie)``, which no batching can change. With ``dedupe_by``
the state keeps only the newest event per value of that field (an item engaged twice appears
once, at its latest time). The state keeps events back to the retention plus the ``as_of``
look-back before its newest event.

Reading as of ``V`` answers from the last ``n`` events at or before ``V`` and within the
retention (``ts >= V - retention``). When the state holds events after ``V``, older events it
dropped to make room (or, with ``dedupe_by``, the older entries of an item engaged again) may
belong to that answer: the read is exact when it fills its ``limit``, reaches the start of its
window, or nothing was dropped; otherwise (and always with ``dedupe_by``, whose dropped entries
may belong anywhere in the answer) it is refused (:class:`AsOfError`) with the newest event
time as the earliest ``as_of`` it answers.

Codec: columns, newest first; times delta-encoded; string columns with few distinct values are
dictionary-coded to one byte per entry. A full LastN(500) of the reference workload is ~12 KB.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate, pairwise
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import msgspec

from usersignals.aggregations.base import Aggregation, AggregationRuntime, ApplyOut, ReadOut
from usersignals.aggregations.context import AS_OF_LOOKBACK_MS, ReadContext
from usersignals.aggregations.params import whole_number_problem
from usersignals.aggregations.rows import FieldResolver, Row
from usersignals.errors import AsOfError
from usersignals.field_names import FieldNames, coerce_names, names_problem
from usersignals.values import KEY, FieldKind

Entry = tuple[Any, ...]  # (ts, tie, *kept values)

_MAX_N = 10_000
_DICT_CODED_MAX = 255


@dataclass(frozen=True)
class LastN(Aggregation):
    """The last ``n`` events (within retention), keeping the fields named in ``keep``."""

    n: int
    keep: tuple[str, ...] = ("item_id", "action", "surface")
    dedupe_by: str | None = None

    kind = "last_n"

    if TYPE_CHECKING:  # `keep` takes one name as a string too (coerced below)

        def __init__(
            self,
            n: int,
            keep: FieldNames = ("item_id", "action", "surface"),
            dedupe_by: str | None = None,
        ) -> None: ...

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep", coerce_names(self.keep))

    def problems(self) -> list[str]:
        unreadable = names_problem("LastN keep", self.keep)
        if unreadable:
            return [unreadable]
        problems = []
        wrong_n = whole_number_problem("LastN n", self.n, 1, _MAX_N)
        if wrong_n:
            problems.append(wrong_n)
        if len(set(self.keep)) != len(self.keep):
            problems.append("LastN keep lists a field twice")
        if self.dedupe_by is not None and self.dedupe_by not in self.keep:
            # Deduping needs the field in every stored entry, old ones included.
            problems.append(f"LastN dedupe_by {self.dedupe_by!r} must also be in keep")
        if "ts" in self.keep:
            problems.append("LastN always keeps ts; do not list it in keep")
        return problems

    def fields(self) -> set[str]:
        return set(self.keep)

    def field_kinds(self) -> dict[str, FieldKind]:
        # Kept fields are stored as they come; only the dedupe key is compared.
        return {self.dedupe_by: KEY} if self.dedupe_by else {}

    def context_parameters(self) -> frozenset[str]:
        names = {"window", "since", "until", "limit", "as_of"}
        if "item_id" in self.keep:
            names |= {"dedupe", "exclude"}
        if "action" in self.keep:
            names.add("actions")
        if "surface" in self.keep:
            names.add("surfaces")
        return frozenset(names)

    def params(self) -> dict[str, Any]:
        return {"n": self.n, "keep": list(self.keep), "dedupe_by": self.dedupe_by}

    def compile(self, resolve: FieldResolver, retention_ms: int) -> LastNRuntime:
        return LastNRuntime(self, resolve, retention_ms)


class _Column(msgspec.Struct, array_like=True, omit_defaults=True):
    # Either ``codes`` index into ``vocab`` (dictionary-coded), or ``values`` hold the column.
    vocab: list[Any] = []
    codes: bytes = b""
    values: list[Any] = []


class _Small(msgspec.Struct, array_like=True, tag=0):
    """Few entries: stored as they are, which is smaller and faster below ~16 entries."""

    entries: list[list[Any]]


class _Large(msgspec.Struct, array_like=True, tag=1):
    newest: int
    gaps: list[int]  # ts[i-1] - ts[i], newest first; gaps[0] == 0
    ties: list[int]
    columns: list[_Column]


_SMALL_MAX = 16


class LastNRuntime(AggregationRuntime[list[Entry]]):
    def __init__(self, spec: LastN, resolve: FieldResolver, retention_ms: int) -> None:
        self.spec = spec
        self.retention_ms = retention_ms
        self._getters = [resolve(name) for name in spec.keep]
        self._dedupe_index = spec.keep.index(spec.dedupe_by) + 2 if spec.dedupe_by else None
        self._index = {name: position + 2 for position, name in enumerate(spec.keep)}
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(_Small | _Large)

    # -- state functions -------------------------------------------------------------------

    def _entries(self, rows: Sequence[Row]) -> list[Entry]:
        getters = self._getters
        return [
            (row[0].ts, zlib.crc32(row[0].event_id.encode()), *[get(row) for get in getters])
            for row in rows
        ]

    def apply(self, state: list[Entry] | None, rows: Sequence[Row]) -> ApplyOut[list[Entry]]:
        return self._combine(state or [], self._entries(rows))

    def merge(self, a: list[Entry], b: list[Entry]) -> list[Entry]:
        return self._combine(a, b).state

    def _combine(self, old: list[Entry], new: list[Entry]) -> ApplyOut[list[Entry]]:
        if not new:
            return ApplyOut(old, 0)
        newest = max(old[0][0] if old else new[0][0], max(entry[0] for entry in new))
        # Expiry is by each event's own time against the newest time seen, which gives the
        # same result whichever batch an old event arrives in.
        cutoff = newest - self.retention_ms - AS_OF_LOOKBACK_MS
        fresh = [entry for entry in new if entry[0] >= cutoff]
        if old and old[-1][0] < cutoff:
            old = [entry for entry in old if entry[0] >= cutoff]
        # A stable sort: entries equal in (ts, tie) — same millisecond and same CRC of the
        # event id — keep their arrival order; that is the one case batching could reorder.
        fresh.sort(key=_order, reverse=True)
        if old and fresh and _order(fresh[-1]) > _order(old[0]):
            merged = fresh + old  # all new events are newer: no need to sort the old ones
        else:
            merged = sorted(old + fresh, key=_order, reverse=True)
        if self._dedupe_index is not None:
            merged = _dedupe(merged, self._dedupe_index)
        return ApplyOut(merged[: self.spec.n], len(new) - len(fresh))

    def read(self, state: list[Entry] | None, context: ReadContext) -> ReadOut:
        entries = state or []
        newest_ts = entries[0][0] if entries else 0
        view = context.view_time(newest_ts)
        end = context.end(newest_ts)
        start = view - self.retention_ms
        window_start = context.start(newest_ts)
        if window_start is not None:
            start = max(start, window_start)
        limit = context.limit or self.spec.n
        out: list[dict[str, Any]] = []
        newest: int | None = None
        # Entries after the view's end (its as_of, or an until): they may have pushed older
        # ones out.
        later = 0
        keep = self.spec.keep
        matches = self._matcher(context)
        complete = False
        for entry in entries:
            ts = entry[0]
            if ts > end:
                later += 1
                continue
            if newest is None:
                newest = ts
            if ts < start:
                complete = True
                break
            if not matches(entry):
                continue
            record = {"ts": ts}
            record.update(zip(keep, entry[2:], strict=True))
            out.append(record)
            if len(out) >= limit:
                complete = True
                break
        # A view that ends before it starts holds nothing, whatever came later.
        if later and end >= start and (not complete or self.spec.dedupe_by is not None):
            self._check_nothing_dropped(entries, end, start, newest_ts)
        return ReadOut(out, newest)

    def _check_nothing_dropped(
        self, entries: list[Entry], end: int, start: int, newest_ts: int
    ) -> None:
        """Raise AsOfError when events this read needs may have been dropped.

        With ``dedupe_by``, an item engaged again after the view time dropped its older entry,
        which may belong anywhere in the answer: such a read is always refused.
        """
        dropped_by_room = len(entries) >= self.spec.n or self.spec.dedupe_by is not None
        dropped_by_age = start < newest_ts - self.retention_ms - AS_OF_LOOKBACK_MS
        if dropped_by_room or dropped_by_age:
            why = "newer events took the room of older ones it needs"
            raise AsOfError("", end, newest_ts, why)  # the view's end: its as_of or until

    def _matcher(self, context: ReadContext) -> Callable[[Entry], bool]:
        """The context's filters (actions, surfaces, exclude, dedupe) as one predicate."""
        idx = self._index
        action_i = idx.get("action")
        surface_i = idx.get("surface")
        item_i = idx.get("item_id")
        seen: set[Any] = set()

        def matches(entry: Entry) -> bool:
            if (
                context.actions is not None
                and action_i is not None
                and entry[action_i] not in context.actions
            ):
                return False
            if (
                context.surfaces is not None
                and surface_i is not None
                and entry[surface_i] not in context.surfaces
            ):
                return False
            if item_i is not None:
                item = entry[item_i]
                if item in context.exclude:
                    return False
                if context.dedupe:
                    if item in seen:
                        return False
                    seen.add(item)
            return True

        return matches

    # -- codec -----------------------------------------------------------------------------

    def encode(self, state: list[Entry]) -> bytes:
        if len(state) <= _SMALL_MAX:
            return self._encoder.encode(_Small(state))  # type: ignore[arg-type]
        columns = list(zip(*state, strict=True))
        times: tuple[int, ...] = columns[0]
        gaps = [0, *(a - b for a, b in pairwise(times))]
        return self._encoder.encode(
            _Large(times[0], gaps, list(columns[1]), [_encode_column(c) for c in columns[2:]])
        )

    def decode(self, data: bytes) -> list[Entry]:
        encoded = self._decoder.decode(data)
        if isinstance(encoded, _Small):
            return encoded.entries  # type: ignore[return-value]
        times = list(accumulate(encoded.gaps, lambda ts, gap: ts - gap, initial=encoded.newest))
        columns = [_decode_column(column) for column in encoded.columns]
        return list(zip(times[1:], encoded.ties, *columns, strict=True))


_order = itemgetter(0, 1)  # (ts, tie)


def _dedupe(entries: list[Entry], index: int) -> list[Entry]:
    """Keep the first (newest) entry per value at ``index``."""
    seen: set[Any] = set()
    kept = []
    for entry in entries:
        key = entry[index]
        if key not in seen:
            seen.add(key)
            kept.append(entry)
    return kept


def _encode_column(values: tuple[Any, ...]) -> _Column:
    vocab: dict[Any, int] = {}
    for value in values:
        if value not in vocab:
            if len(vocab) >= _DICT_CODED_MAX or not isinstance(value, str):
                return _Column(values=list(values))
            vocab[value] = len(vocab)
    return _Column(vocab=list(vocab), codes=bytes(vocab[value] for value in values))


def _decode_column(column: _Column) -> list[Any]:
    if column.vocab:
        vocab = column.vocab
        return [vocab[code] for code in column.codes]
    return column.values
