"""What the tests of the native aggregations share: batch splits, the engine's seam, the
Python reference fed the same batches, and answers with refusals as values.

Each signal under test enriches its events from one lookup table, passed as ``table``
(``{item_id: record}``) under the source name ``source``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from usersignals import Event, Signal
from usersignals.aggregations.base import ReadOut
from usersignals.errors import AsOfError
from usersignals.processing.native import NativeSignals
from usersignals.state.codec import UserRecord

Table = Mapping[str, Mapping[str, Any]]


def batches(events: Sequence[Event], cuts: Sequence[int]) -> list[list[Event]]:
    """``events`` split at ``cuts`` (out-of-range and repeated cuts ignored)."""
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(events)}), len(events)]
    return [list(events[a:b]) for a, b in itertools.pairwise(bounds)]


def native_states(
    signal: Signal, parts: list[list[Event]], table: Table, source: str = "items"
) -> dict[str, bytes]:
    """Run the batches through the engine's seam, as the engine does, per user record: each
    user's stored state (msgpack bin) of ``signal`` after the last batch."""
    native = NativeSignals([signal])
    users = {event.user_id for part in parts for event in part}
    records = {user: UserRecord({}, {}) for user in users}
    for part in parts:
        by_user: dict[str, list[int]] = {}
        for i, event in enumerate(part):
            by_user.setdefault(event.user_id, []).append(i)
        work = [
            (user.encode(), records[user], sorted(ix, key=lambda i: part[i].ts))
            for user, ix in by_user.items()
        ]
        states, _, _ = native.apply(part, work, {source: table})
        for (_, record, _), new in zip(work, states, strict=True):
            native.place(record.states, new)
    return {user: bytes(r.states[signal.key]) for user, r in records.items() if r.states}


def reference_state(signal: Signal, parts: list[list[Event]], user: str, table: Table) -> Any:
    """The Python reference, fed per batch the user's accepted rows sorted by time, and
    stored (encoded and decoded) after each, as the engine does."""
    runtime, accepts = signal.compiled.runtime, signal.compiled.accepts
    state = None
    for part in parts:
        rows = [(e, (table.get(e.item_id, {}),)) for e in part if e.user_id == user]
        rows = sorted(rows, key=lambda row: row[0].ts)
        rows = [row for row in rows if accepts is None or accepts(row)]
        if rows:
            state = runtime.decode(runtime.encode(runtime.apply(state, rows).state))
    return state


def answer(read: Any, *args: Any) -> ReadOut | tuple[int, int | None, str]:
    """``read(*args)``, or its refusal as (as_of, earliest as_of, why)."""
    try:
        out = read(*args)
    except AsOfError as exc:
        return (exc.as_of_ms, exc.earliest_ms, exc.why)
    assert isinstance(out, ReadOut)
    return out
