"""``Count`` and ``Sum`` grouped by fields, over any window the tiles cover.

State: the newest event time ``M``; the recent events at their exact times, ``(time, group)
-> value``; older events in integer tile cells ``(bucket start, group) -> value`` laid out by
:mod:`usersignals.aggregations.tiles`; and the *exact boundary* ``B`` between them: the tiles
hold only events before ``B``, the exact entries every event from ``B`` on. ``B`` is two days
(:data:`EXACT_SPAN_MS`) before ``M``, or later when the events from there on make more than
``exact_entries`` entries (:data:`EXACT_ENTRIES` unless the signal says otherwise): then just
after the time of the first entry past the cap, counting from the newest, so that a time's
entries are all exact or all tiled. Without the cap a user with an event nearly every
millisecond kept an entry per event for two days, rewritten in each of their batches. ``B``
only moves forward as events arrive (a newer event pushes the others down, a late one lands
below them), and the cap is applied after each batch's events are added, so the state is the
same whatever the batches. ``B`` is stored: from the entries alone a state with fewer entries
than the cap could not tell whether its older times were tiled. ``Sum`` stores its values as
integers scaled by ``10**decimals``: integer addition is associative, so the total never
depends on the order in which batches arrive (float addition would, in its last bits).

Reading a window ``[S, E]`` (both edges included; ``S`` no earlier than the retention edge,
``as_of - retention`` rounded up to the coarsest tile) sums the exact entries inside it and
every tile that overlaps it, for the groups that pass the context's ``actions`` / ``surfaces``
filters (when those are grouping fields). Hence:

- exact whenever ``S`` is at or after ``B`` — for a user with at most ``exact_entries``
  entries (distinct time and group) in the last two days, every window of at most one day
  read at any ``as_of`` at or after ``M - 1 day``;
- otherwise never less than the exact value, and more by at most the events of the tile that
  straddles ``S`` (and of the one that straddles ``E`` when ``E`` is before ``B``):
  never 0 when the window holds events;
- with an ``as_of`` before ``M`` (the state holds later events), refused (:class:`AsOfError`)
  when a tile straddling ``S`` or ``E`` holds events the filters want: it may hold events
  after ``as_of``, or a share before ``S`` other than the finer tile the answer served at
  ``as_of`` counted. Otherwise the answer is exact, and equal to the one served then (what a
  point-in-time training set holds).

A ``Sum`` value counts when it is a finite number whose scaled magnitude is at most
:data:`MAX_SUM_SCALED`; a larger one adds nothing, as a value that is not a number (past
2**53 a float has no unit digit, and a few such values would leave the stored integers'
range). Cells and answers add modulo 2**64, as the stored 64-bit integers do: a sum is
exact whenever it fits in them, whatever the order of its values (wrapping addition is
associative and saturating addition is not, and the state must not depend on the batches).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from usersignals.aggregations.base import Aggregation, AggregationRuntime, ApplyOut, ReadOut
from usersignals.aggregations.context import AS_OF_LOOKBACK_MS, ReadContext, retention_start
from usersignals.aggregations.params import whole_number_problem
from usersignals.aggregations.rows import FieldResolver, Getter, Row
from usersignals.aggregations.tiles import (
    BucketerCache,
    Cells,
    Group,
    TileLayout,
    rebucket,
    wrapped,
)
from usersignals.durations import DAY_MS, MINUTE_MS
from usersignals.errors import AsOfError
from usersignals.field_names import FieldNames, coerce_names, names_problem
from usersignals.values import KEY, NUMBER, FieldKind

#: Events this recent (before the newest) keep their exact times, at most EXACT_ENTRIES of
#: their entries: two days, so that a window of up to one day read at any ``as_of`` within
#: the last day is exact.
EXACT_SPAN_MS = 2 * DAY_MS
#: At most this many exact entries (distinct time and group, the newest) unless a signal sets
#: ``exact_entries``: a Count's state then stays within a few KB for a user with an event
#: every millisecond (2 to 3 bytes an entry).
EXACT_ENTRIES = 2_048
#: The most a signal may set: past it a record would outgrow what the cap is for.
MAX_EXACT_ENTRIES = 1_000_000
#: The largest scaled magnitude (``|value| * 10**decimals``) of a ``Sum`` value that counts.
MAX_SUM_SCALED = 2**53

Exact = dict[tuple[int, Group], int]  # (event time, group) -> value
_Key = TypeVar("_Key")


class TileState(msgspec.Struct, gc=False):
    """The newest event time, the older tile cells, the recent exact entries and the exact
    boundary between them (``B`` above).

    ``newest`` is 0 only for an empty state.
    """

    newest: int
    cells: Cells
    exact: Exact
    exact_from: int


class _Encoded(msgspec.Struct, array_like=True):
    newest: int
    groups: list[list[Any]]
    # Flat triples (start gap in minutes from the previous cell, group index, value),
    # cells newest first: small integers, one or two bytes each in msgpack.
    triples: list[int]
    # Format 2: the exact entries as flat triples (time gap in ms from the previous entry,
    # group index, value), newest first. Format 1 records have none (read as empty).
    exact: list[int] = []
    # Format 3: the exact boundary's gap before the newest event. Earlier records have none:
    # their boundary was always two days before it.
    exact_gap: int = EXACT_SPAN_MS


@dataclass(frozen=True)
class Count(Aggregation):
    """Number of events per group, over request-time windows.

    ``exact_entries``: how many of the newest entries (a distinct time and group, within
    two days) stay at their exact times; a window starting before them counts its
    straddling tile whole. More makes the windows of very active users exact further back,
    for 2 to 3 bytes of record an entry.
    """

    by: tuple[str, ...] = ("action",)
    tiles: TileLayout = field(default_factory=TileLayout)
    exact_entries: int = EXACT_ENTRIES

    kind = "count"

    if TYPE_CHECKING:  # `by` takes one name as a string too (coerced below)

        def __init__(
            self,
            by: FieldNames = ("action",),
            tiles: TileLayout = ...,
            exact_entries: int = EXACT_ENTRIES,
        ) -> None: ...

    def __post_init__(self) -> None:
        object.__setattr__(self, "by", coerce_names(self.by))

    def problems(self) -> list[str]:
        unreadable = names_problem(f"{type(self).__name__} by", self.by)
        if unreadable:
            return [unreadable]
        problems = list(self.tiles.problems())
        if len(set(self.by)) != len(self.by):
            problems.append(f"{type(self).__name__} by lists a field twice")
        if self.tiles.tiers and self.tiles.tiers[0][0] % MINUTE_MS:
            problems.append("the finest tile resolution must be a whole number of minutes")
        wrong_entries = whole_number_problem(
            f"{type(self).__name__} exact_entries", self.exact_entries, 1, MAX_EXACT_ENTRIES
        )
        if wrong_entries:
            problems.append(wrong_entries)
        return problems

    def fields(self) -> set[str]:
        return set(self.by)

    def field_kinds(self) -> dict[str, FieldKind]:
        return dict.fromkeys(self.by, KEY)

    def context_parameters(self) -> frozenset[str]:
        names = {"window", "since", "until", "as_of"}
        if "action" in self.by:
            names.add("actions")
        if "surface" in self.by:
            names.add("surfaces")
        return frozenset(names)

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"by": list(self.by), "tiles": self.tiles.to_json()}
        if self.exact_entries != EXACT_ENTRIES:
            # Only when set: the definitions written before the cap existed keep their form.
            params["exact_entries"] = self.exact_entries
        return params

    def compile(self, resolve: FieldResolver, retention_ms: int) -> TileRuntime:
        return TileRuntime(self, resolve, retention_ms, measure=None, scale=1)


@dataclass(frozen=True)
class Sum(Count):
    """Sum of a numeric field per group, kept exactly to ``decimals`` decimal places."""

    of: str = ""
    decimals: int = 3

    kind = "sum"

    if TYPE_CHECKING:  # as Count's

        def __init__(
            self,
            by: FieldNames = ("action",),
            tiles: TileLayout = ...,
            exact_entries: int = EXACT_ENTRIES,
            of: str = "",
            decimals: int = 3,
        ) -> None: ...

    def problems(self) -> list[str]:
        problems = super().problems()
        if not self.of:
            problems.append("Sum needs the field to add up: Sum(of=...)")
        wrong_decimals = whole_number_problem("Sum decimals", self.decimals, 0, 9)
        if wrong_decimals:
            problems.append(wrong_decimals)
        return problems

    def fields(self) -> set[str]:
        return super().fields() | {self.of}

    def field_kinds(self) -> dict[str, FieldKind]:
        return {**super().field_kinds(), self.of: NUMBER}

    def params(self) -> dict[str, Any]:
        return {"of": self.of, "decimals": self.decimals, **super().params()}

    def compile(self, resolve: FieldResolver, retention_ms: int) -> TileRuntime:
        return TileRuntime(
            self, resolve, retention_ms, measure=resolve(self.of), scale=10**self.decimals
        )


def _add(table: dict[_Key, int], key: _Key, value: int) -> None:
    """``value`` added to ``table[key]`` (0 when absent), wrapped as stored values are."""
    table[key] = wrapped(table.get(key, 0) + value)


def _into_tile(cells: Cells, bucket: int | None, group: Group, value: int) -> None:
    """An exact entry's ``value`` added to its tile's cell; nothing when its time is past
    the retention (``bucket`` ``None``)."""
    if bucket is not None:
        _add(cells, (bucket, group), value)


class TileRuntime(AggregationRuntime[TileState]):
    def __init__(
        self,
        spec: Count,
        resolve: FieldResolver,
        retention_ms: int,
        measure: Getter | None,
        scale: int,
    ) -> None:
        self.spec = spec
        self.layout = spec.tiles
        self.retention_ms = retention_ms
        # Tiles reach back the retention and the as_of look-back before the newest event.
        self._bucketers = BucketerCache(spec.tiles, retention_ms + AS_OF_LOOKBACK_MS)
        self._coarsest = spec.tiles.tiers[-1][0]
        self._group_getters = [resolve(name) for name in spec.by]
        self._measure = measure
        self._scale = scale
        self._exact_entries = spec.exact_entries
        self._action_at = spec.by.index("action") if "action" in spec.by else None
        self._surface_at = spec.by.index("surface") if "surface" in spec.by else None
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(_Encoded)

    def _value(self, row: Row) -> int | None:
        if self._measure is None:
            return 1
        raw = self._measure(row)
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            return None  # a missing or non-numeric value adds nothing; it is not an error
        scaled = raw * self._scale
        if not (isinstance(scaled, int) or math.isfinite(scaled)) or abs(scaled) > MAX_SUM_SCALED:
            return None  # too large to hold exactly: adds nothing, as a non-number
        return round(scaled)

    def _settle(self, state: TileState | None, newest: int, exact_from: int) -> tuple[Cells, Exact]:
        """``state``'s cells and exact entries laid out for ``newest``, the exact entries
        before ``exact_from`` (at or after the state's own boundary) moved into their tiles."""
        if state is None:
            return {}, {}
        bucketers = self._bucketers
        bucketer = bucketers.get(newest)
        unchanged = bucketers.key(state.newest) == bucketers.key(newest)
        cells = dict(state.cells) if unchanged else rebucket(state.cells, bucketer)
        exact: Exact = {}
        for (ts, group), value in state.exact.items():
            if ts >= exact_from:
                exact[ts, group] = value
                continue
            _into_tile(cells, bucketer.bucket(ts), group, value)  # before the boundary now
        return cells, exact

    def apply(self, state: TileState | None, rows: Sequence[Row]) -> ApplyOut[TileState]:
        newest = max(state.newest if state else 0, rows[-1][0].ts)
        span_from = newest - EXACT_SPAN_MS
        exact_from = max(state.exact_from, span_from) if state else span_from
        cells, exact = self._settle(state, newest, exact_from)
        bucket_of = self._bucketers.get(newest).bucket
        getters = self._group_getters
        single = getters[0] if len(getters) == 1 else None
        expired = 0
        for row in rows:
            ts = row[0].ts
            value = 1 if self._measure is None else self._value(row)
            group = (single(row),) if single is not None else tuple([get(row) for get in getters])
            if ts >= exact_from:
                if value is not None:
                    _add(exact, (ts, group), value)
                continue
            bucket = bucket_of(ts)
            if bucket is None:
                expired += 1
            elif value is not None:
                _add(cells, (bucket, group), value)
        exact_from = self._trim(cells, exact, newest, exact_from)
        return ApplyOut(TileState(newest, cells, exact, exact_from), expired)

    def _trim(self, cells: Cells, exact: Exact, newest: int, exact_from: int) -> int:
        """Past ``exact_entries`` entries, moves those of the time of the first entry past
        the cap (counting from the newest) and older into their tiles; the new boundary.
        After the events are added, not as they come: which entries are the newest depends
        on all of them, whatever the batches."""
        if len(exact) <= self._exact_entries:
            return exact_from
        times = heapq.nlargest(self._exact_entries + 1, [ts for ts, _ in exact])
        exact_from = times[-1] + 1  # the first entry past the cap, and its time's others
        bucket_of = self._bucketers.get(newest).bucket
        for ts, group in [entry for entry in exact if entry[0] < exact_from]:
            _into_tile(cells, bucket_of(ts), group, exact.pop((ts, group)))
        return exact_from

    def merge(self, a: TileState, b: TileState) -> TileState:
        newest = max(a.newest, b.newest)
        exact_from = max(a.exact_from, b.exact_from, newest - EXACT_SPAN_MS)
        cells, exact = self._settle(a, newest, exact_from)
        other_cells, other_exact = self._settle(b, newest, exact_from)
        for key, value in other_cells.items():
            _add(cells, key, value)
        for entry, value in other_exact.items():
            _add(exact, entry, value)
        exact_from = self._trim(cells, exact, newest, exact_from)
        return TileState(newest, cells, exact, exact_from)

    def _wanted(self, group: Group, context: ReadContext) -> bool:
        action_at, surface_at = self._action_at, self._surface_at
        if (
            context.actions is not None
            and action_at is not None
            and group[action_at] not in context.actions
        ):
            return False
        if context.surfaces is not None and surface_at is not None:
            return group[surface_at] in context.surfaces
        return True

    def _span(self, state: TileState, context: ReadContext) -> tuple[int, int]:
        """The view's ``[start, end]``, the start no earlier than the retention edge."""
        newest = state.newest
        view = context.view_time(newest)
        start = retention_start(view, self.retention_ms, self._coarsest)
        window_start = context.start(newest)
        if window_start is not None:
            start = max(start, window_start)
        oldest = self._bucketers.get(newest).cutoffs[-1]
        if start < oldest:
            # Tiles this old were dropped: they could be missing from the answer.
            raise AsOfError("", view, oldest + self.retention_ms, "its tiles from then expired")
        return start, context.end(newest)

    def read(self, state: TileState | None, context: ReadContext) -> ReadOut:
        if state is None:
            return ReadOut({"total": 0, "by": {}}, None)
        # Before the empty answer: a state whose counted events all expired still knows
        # its newest event, and an as_of those events covered is refused, not answered 0.
        start, end = self._span(state, context)
        if not (state.cells or state.exact):
            return ReadOut({"total": 0, "by": {}}, None)
        by: dict[str, int] = {}
        total = 0
        wanted = self._wanted
        for (ts, group), value in state.exact.items():
            if start <= ts <= end and wanted(group, context):
                total += value
                label = str(group[0]) if group else "all"
                by[label] = by.get(label, 0) + value
        if state.cells:
            bucketer = self._bucketers.get(state.newest)
            # Tiles hold only events before the exact boundary: that bounds their last time.
            exact_from = state.exact_from
            pairs = bucketer.pairs
            earlier = context.as_of_ms is not None and context.view_time(state.newest) < (
                state.newest
            )
            for (bucket, group), value in state.cells.items():
                if bucket > end:
                    continue
                width = next((res for cutoff, res in pairs if bucket >= cutoff), pairs[-1][1])
                last = min(bucket + width, exact_from) - 1
                if last < start or not wanted(group, context):
                    continue
                if earlier and (bucket < start or last > end):
                    raise AsOfError(
                        "",
                        context.view_time(state.newest),
                        state.newest,
                        "a tile straddling the window's edge holds events of other times",
                    )
                total += value
                label = str(group[0]) if group else "all"
                by[label] = by.get(label, 0) + value
        newest_ms = min(state.newest, end)
        total = wrapped(total)  # as the core adds: modulo 2**64 (see the module)
        by = {label: wrapped(value) for label, value in by.items()}
        scale = self._scale
        if scale != 1:
            # As floats, then divided, as the core answers: exact while within 2**53 (past
            # it, int / int rounds once and the core twice, and the answers differed).
            return ReadOut(
                {
                    "total": float(total) / scale,
                    "by": {k: float(v) / scale for k, v in sorted(by.items())},
                },
                newest_ms,
            )
        return ReadOut({"total": total, "by": dict(sorted(by.items()))}, newest_ms)

    def encode(self, state: TileState) -> bytes:
        group_index: dict[Group, int] = {}
        triples: list[int] = []
        previous = state.newest - state.newest % MINUTE_MS
        for (start, group), value in _canonical_order(state.cells):
            index = group_index.setdefault(group, len(group_index))
            triples += ((previous - start) // MINUTE_MS, index, value)
            previous = start
        exact: list[int] = []
        previous = state.newest
        for (ts, group), value in _canonical_order(state.exact):
            index = group_index.setdefault(group, len(group_index))
            exact += (previous - ts, index, value)
            previous = ts
        groups = [list(group) for group in group_index]
        gap = state.newest - state.exact_from
        return self._encoder.encode(_Encoded(state.newest, groups, triples, exact, gap))

    def decode(self, data: bytes) -> TileState:
        encoded = self._decoder.decode(data)
        groups = [tuple(group) for group in encoded.groups]
        triples = encoded.triples
        minute = MINUTE_MS
        start = encoded.newest - encoded.newest % minute
        starts = []
        for gap in triples[0::3]:
            start -= gap * minute
            starts.append(start)
        keys = zip(starts, [groups[index] for index in triples[1::3]], strict=True)
        cells = dict(zip(keys, triples[2::3], strict=True))
        exact: Exact = {}
        ts = encoded.newest
        flat = encoded.exact
        for i in range(0, len(flat), 3):
            ts -= flat[i]
            exact[ts, groups[flat[i + 1]]] = flat[i + 2]
        return TileState(encoded.newest, cells, exact, encoded.newest - encoded.exact_gap)


def _canonical_order(cells: dict[tuple[int, Group], int]) -> list[tuple[tuple[int, Group], int]]:
    """Cells newest first, then by group: one order for equal states, always."""
    try:
        return sorted(cells.items(), reverse=True)
    except TypeError:  # groups mixing None and strings do not compare; their reprs do
        return sorted(cells.items(), key=lambda item: (item[0][0], repr(item[0][1])), reverse=True)
