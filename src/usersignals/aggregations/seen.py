"""``FirstSeen`` / ``LastSeen``: the earliest / latest event time, overall or per group.

State: ``group -> time``. For ``LastSeen``, a group whose latest time is older than the
retention and the ``as_of`` look-back (counted back from the newest event) is dropped and older
events are not applied: the group is there exactly when its latest event is that recent,
whatever the batches. Read as of ``V``, a group answers its latest time when that is within
``[V - retention, V]``; a requested group whose latest time is after the view's end has an
unknown latest time before it, so the read is refused (:class:`AsOfError`) naming that time.

``FirstSeen`` keeps the earliest time ever seen and is the one aggregation the retention does
not apply to — "first seen" means all-time — because forgetting an expired minimum would also
forget the events that came after it. Read as of ``V`` it is exact: the first time, when it is
not after the view's end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from usersignals.aggregations.base import Aggregation, AggregationRuntime, ApplyOut, ReadOut
from usersignals.aggregations.context import AS_OF_LOOKBACK_MS, ReadContext
from usersignals.aggregations.params import field_name_problem
from usersignals.aggregations.rows import FieldResolver, Row
from usersignals.errors import AsOfError
from usersignals.values import KEY, FieldKind


class SeenState(msgspec.Struct, gc=False, array_like=True):
    newest: int
    times: dict[str, int]  # str(group value) -> time; "" is the whole-user group


@dataclass(frozen=True)
class LastSeen(Aggregation):
    """The latest event time, per value of ``by`` (e.g. ``"action"``) or overall."""

    by: str | None = None

    kind = "last_seen"
    _latest = True

    def problems(self) -> list[str]:
        wrong_by = field_name_problem(f"{type(self).__name__} by", self.by, optional=True)
        return [wrong_by] if wrong_by else []

    def fields(self) -> set[str]:
        return {self.by} if self.by else set()

    def field_kinds(self) -> dict[str, FieldKind]:
        return {self.by: KEY} if self.by else {}

    def context_parameters(self) -> frozenset[str]:
        names = {"until", "as_of"}
        if self.by == "action":
            names.add("actions")
        if self.by == "surface":
            names.add("surfaces")
        return frozenset(names)

    def params(self) -> dict[str, Any]:
        return {"by": self.by}

    def compile(self, resolve: FieldResolver, retention_ms: int) -> SeenRuntime:
        return SeenRuntime(self, resolve, retention_ms, latest=self._latest)


@dataclass(frozen=True)
class FirstSeen(LastSeen):
    """The earliest event time ever seen, per value of ``by`` or overall."""

    kind = "first_seen"
    _latest = False


class SeenRuntime(AggregationRuntime[SeenState]):
    def __init__(
        self, spec: LastSeen, resolve: FieldResolver, retention_ms: int, latest: bool
    ) -> None:
        self.spec = spec
        self.retention_ms = retention_ms
        self.latest = latest
        self._group = resolve(spec.by) if spec.by else None
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(SeenState)

    def apply(self, state: SeenState | None, rows: Sequence[Row]) -> ApplyOut[SeenState]:
        newest = max(state.newest if state else 0, rows[-1][0].ts)
        cutoff = newest - self.retention_ms - AS_OF_LOOKBACK_MS if self.latest else -1
        times = {g: t for g, t in state.times.items() if t >= cutoff} if state else {}
        expired = 0
        pick = max if self.latest else min
        for row in rows:
            ts = row[0].ts
            if ts < cutoff:
                expired += 1
                continue
            group = "" if self._group is None else str(self._group(row))
            have = times.get(group)
            times[group] = ts if have is None else pick(have, ts)
        return ApplyOut(SeenState(newest, times), expired)

    def merge(self, a: SeenState, b: SeenState) -> SeenState:
        newest = max(a.newest, b.newest)
        cutoff = newest - self.retention_ms - AS_OF_LOOKBACK_MS if self.latest else -1
        pick = max if self.latest else min
        times = {g: t for g, t in a.times.items() if t >= cutoff}
        for group, ts in b.times.items():
            if ts >= cutoff:
                have = times.get(group)
                times[group] = ts if have is None else pick(have, ts)
        return SeenState(newest, times)

    def read(self, state: SeenState | None, context: ReadContext) -> ReadOut:
        if state is None:
            return ReadOut({}, None)
        end = context.end(state.newest)
        allowed = context.actions if self.spec.by == "action" else None
        if self.spec.by == "surface":
            allowed = context.surfaces
        wanted = {
            group: ts
            for group, ts in sorted(state.times.items())
            if allowed is None or group in allowed
        }
        if not self.latest:  # FirstSeen: all-time, exact at any end
            values = {group: ts for group, ts in wanted.items() if ts <= end}
            return ReadOut(values, min(state.newest, end))
        view = context.view_time(state.newest)
        cutoff = view - self.retention_ms
        if end < cutoff:  # a view that ends before it starts holds nothing
            return ReadOut({}, min(state.newest, end))
        later = [ts for ts in wanted.values() if ts > end]
        if later:
            why = "a newer event hides the latest one before it"
            raise AsOfError("", end, max(later), why)  # the view's end: its as_of or until
        if view - self.retention_ms < state.newest - self.retention_ms - AS_OF_LOOKBACK_MS:
            earliest = state.newest - AS_OF_LOOKBACK_MS
            raise AsOfError("", view, earliest, "its retention reaches past the look-back")
        values = {group: ts for group, ts in wanted.items() if ts >= cutoff}
        return ReadOut(values, min(state.newest, end))

    def encode(self, state: SeenState) -> bytes:
        return self._encoder.encode(SeenState(state.newest, dict(sorted(state.times.items()))))

    def decode(self, data: bytes) -> SeenState:
        return self._decoder.decode(data)
