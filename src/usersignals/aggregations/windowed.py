"""``Count`` and ``Sum`` grouped by fields, over any window the tiles cover.

State: the newest event time ``M`` and integer cells ``(bucket start, group) -> value`` laid
out by :mod:`usersignals.aggregations.tiles`. ``Sum`` stores its values as integers scaled by
``10**decimals``: integer addition is associative, so the total never depends on the order in
which batches arrive (float addition would, in its last bits).

Reading sums the cells of the window whose group passes the context's ``actions`` /
``surfaces`` filters (when those fields are grouping fields) and reports the total and the
values per value of the first grouping field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from usersignals.aggregations.base import Aggregation, AggregationRuntime, ApplyOut, ReadOut
from usersignals.aggregations.context import ReadContext
from usersignals.aggregations.rows import FieldResolver, Getter, Row
from usersignals.aggregations.tiles import BucketerCache, Cells, Group, TileLayout, rebucket
from usersignals.durations import MINUTE_MS
from usersignals.field_names import coerce_names, names_problem
from usersignals.values import KEY, NUMBER, FieldKind


class TileState(msgspec.Struct, gc=False):
    """The newest event time and the cells. ``newest`` is 0 only for an empty state."""

    newest: int
    cells: Cells


class _Encoded(msgspec.Struct, array_like=True):
    newest: int
    groups: list[list[Any]]
    # Flat triples (start gap in minutes from the previous cell, group index, value),
    # cells newest first: small integers, one or two bytes each in msgpack.
    triples: list[int]


@dataclass(frozen=True)
class Count(Aggregation):
    """Number of events per group, over request-time windows."""

    by: tuple[str, ...] = ("action",)
    tiles: TileLayout = field(default_factory=TileLayout)

    kind = "count"

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
        return {"by": list(self.by), "tiles": self.tiles.to_json()}

    def compile(self, resolve: FieldResolver, retention_ms: int) -> TileRuntime:
        return TileRuntime(self, resolve, retention_ms, measure=None, scale=1)


@dataclass(frozen=True)
class Sum(Count):
    """Sum of a numeric field per group, kept exactly to ``decimals`` decimal places."""

    of: str = ""
    decimals: int = 3

    kind = "sum"

    def problems(self) -> list[str]:
        problems = super().problems()
        if not self.of:
            problems.append("Sum needs the field to add up: Sum(of=...)")
        if not 0 <= self.decimals <= 9:
            problems.append("Sum decimals must be between 0 and 9")
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
        self._bucketers = BucketerCache(spec.tiles, retention_ms)
        self._group_getters = [resolve(name) for name in spec.by]
        self._measure = measure
        self._scale = scale
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
        return round(raw * self._scale)

    def apply(self, state: TileState | None, rows: Sequence[Row]) -> ApplyOut[TileState]:
        old_newest = state.newest if state else 0
        newest = max(old_newest, rows[-1][0].ts)
        bucketers = self._bucketers
        bucketer = bucketers.get(newest)
        cells: Cells = {}
        if state is not None:
            unchanged = bucketers.key(old_newest) == bucketers.key(newest)
            cells = dict(state.cells) if unchanged else rebucket(state.cells, bucketer)
        getters = self._group_getters
        single = getters[0] if len(getters) == 1 else None
        bucket_of = bucketer.bucket
        expired = 0
        for row in rows:
            bucket = bucket_of(row[0].ts)
            if bucket is None:
                expired += 1
                continue
            value = 1 if self._measure is None else self._value(row)
            if value is None:
                continue
            group = (single(row),) if single is not None else tuple([get(row) for get in getters])
            key = (bucket, group)
            cells[key] = cells.get(key, 0) + value
        return ApplyOut(TileState(newest, cells), expired)

    def merge(self, a: TileState, b: TileState) -> TileState:
        newest = max(a.newest, b.newest)
        bucketer = self._bucketers.get(newest)
        cells = rebucket(a.cells, bucketer)
        for key, value in rebucket(b.cells, bucketer).items():
            cells[key] = cells.get(key, 0) + value
        return TileState(newest, cells)

    def read(self, state: TileState | None, context: ReadContext) -> ReadOut:
        if state is None or not state.cells:
            return ReadOut({"total": 0, "by": {}}, None)
        start = context.start_ms
        end = context.end_ms
        actions, surfaces = context.actions, context.surfaces
        action_at, surface_at = self._action_at, self._surface_at
        by: dict[str, int | float] = {}
        total = 0
        for (bucket, group), value in state.cells.items():
            if bucket > end or (start is not None and bucket < start):
                continue
            if actions is not None and action_at is not None and group[action_at] not in actions:
                continue
            if (
                surfaces is not None
                and surface_at is not None
                and group[surface_at] not in surfaces
            ):
                continue
            total += value
            label = str(group[0]) if group else "all"
            by[label] = by.get(label, 0) + value
        scale = self._scale
        if scale != 1:
            return ReadOut(
                {"total": total / scale, "by": {k: v / scale for k, v in sorted(by.items())}},
                min(state.newest, end),
            )
        return ReadOut({"total": total, "by": dict(sorted(by.items()))}, min(state.newest, end))

    def encode(self, state: TileState) -> bytes:
        group_index: dict[Group, int] = {}
        triples: list[int] = []
        previous = state.newest - state.newest % MINUTE_MS
        for (start, group), value in _canonical_order(state.cells):
            index = group_index.setdefault(group, len(group_index))
            triples += ((previous - start) // MINUTE_MS, index, value)
            previous = start
        groups = [list(group) for group in group_index]
        return self._encoder.encode(_Encoded(state.newest, groups, triples))

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
        return TileState(encoded.newest, dict(zip(keys, triples[2::3], strict=True)))


def _canonical_order(cells: Cells) -> list[tuple[tuple[int, Group], int]]:
    """Cells newest bucket first, then by group: one order for equal states, always."""
    try:
        return sorted(cells.items(), reverse=True)
    except TypeError:  # groups mixing None and strings do not compare; their reprs do
        return sorted(cells.items(), key=lambda item: (item[0][0], repr(item[0][1])), reverse=True)
