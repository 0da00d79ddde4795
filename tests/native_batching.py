"""What the native-versus-reference property tests share: batch splits, running batches
through the engine's native seam, the Python reference fed the same batches, and reads
compared with their refusals.

Every test's signals take their enriched fields from one lookup of an item table keyed by
``item_id`` (or none), so a row is ``(event, (the event's item record,))``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

import msgspec
import pytest
from hypothesis import strategies as st

from usersignals import Event, ReadContext, Signal
from usersignals.aggregations.base import ReadOut
from usersignals.errors import AsOfError, StateCodecError
from usersignals.processing.native import NativeSignals
from usersignals.state.codec import UserRecord

T = TypeVar("T")
Table = Mapping[str, Mapping[str, Any]]
BASE = 1_767_225_600_000  # 2026-01-01T00:00Z


def category_table(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """An item table whose ``category`` is of several types: str, int, a non-integral float
    (1 / 1.0 / True are never mixed, see docs/native.md) and None; the last item has no
    record, so its events miss the field."""
    return {
        item: {"category": [f"c{n % 3}", n % 4, n + 0.5, None][n % 4]}
        for n, item in enumerate(items[:-1])
    }


def batches(events: Sequence[T], cuts: Sequence[int]) -> list[list[T]]:
    """``events`` (or any items: (event, position) pairs) split at the positions in
    ``cuts`` (out-of-range cuts are ignored)."""
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(events)}), len(events)]
    return [list(events[a:b]) for a, b in itertools.pairwise(bounds)]


def users_of(parts: Sequence[Sequence[Event]]) -> list[str]:
    """The users the batches hold events of, in first-seen order."""
    return list(dict.fromkeys(event.user_id for part in parts for event in part))


def native_states(
    signal: Signal, parts: list[list[Event]], users: Sequence[str], table: Table
) -> dict[str, bytes]:
    """Run the batches through the engine's seam, as the engine does, per user record: the
    stored bytes (a msgpack bin) per user with state."""
    native = NativeSignals([signal])
    records = {user: UserRecord({}, {}) for user in users}
    for part in parts:
        by_user: dict[str, list[int]] = {}
        for i, event in enumerate(part):
            by_user.setdefault(event.user_id, []).append(i)
        work = [
            (user.encode(), records[user], sorted(ix, key=lambda i: part[i].ts))
            for user, ix in by_user.items()
        ]
        states, _, _ = native.apply(part, work, {"items": table})
        for (_, record, _), new in zip(work, states, strict=True):
            native.place(record.states, new)
    return {user: bytes(r.states[signal.key]) for user, r in records.items() if r.states}


def reference_state(signal: Signal, parts: list[list[Event]], user: str, table: Table) -> Any:
    """The Python reference, fed per batch the user's accepted rows sorted by time, its state
    encoded and decoded between batches as the store does."""
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


def states_whatever_the_batches(
    signal: Signal, events: list[Event], cuts: Sequence[int], users: Sequence[str], table: Table
) -> Iterator[tuple[str, Any, bytes]]:
    """Per user with state: the reference's state after the batches split at ``cuts`` and
    the native state's bytes (unwrapped from the record's msgpack bin), having checked that
    the native bytes are the same in one batch as in those."""
    once = native_states(signal, [events], users, table)
    assert native_states(signal, batches(events, cuts), users, table) == once
    for user in users:
        reference = reference_state(signal, batches(events, cuts), user, table)
        if reference is None:
            assert user not in once
            continue
        yield user, reference, msgspec.msgpack.decode(once[user], type=bytes)


def reads(
    signal: Signal,
    parts: list[list[Event]],
    context: ReadContext,
    users: Sequence[str],
    table: Table,
) -> Iterator[tuple[Any, Any]]:
    """Per user: the reference's answer (or refusal) after ``parts``, and the native one."""
    native = NativeSignals([signal])
    stored = native_states(signal, parts, users, table)
    for user in users:
        reference = reference_state(signal, parts, user, table)
        expected = answer(signal.compiled.runtime.read, reference, context)
        yield expected, answer(native.read, signal, stored.get(user), context, user.encode())


def assert_a_codec_error_naming_the_key(signal: Signal, stored: bytes, table: Table) -> None:
    """A batch over ``stored`` and a read of it both fail with the key's StateCodecError."""
    native = NativeSignals([signal])
    event = Event("e1", "u1", "i1", "click", "home", 1_767_225_600_000)
    record = UserRecord({}, {signal.key: msgspec.Raw(stored)})
    with pytest.raises(StateCodecError) as caught:
        native.apply([event], [(b"u:u1", record, [0])], {"items": table})
    assert caught.value.key == b"u:u1"
    with pytest.raises(StateCodecError):
        native.read(signal, stored, ReadContext(), b"u:u1")


@st.composite
def event_lists(
    draw: st.DrawFn,
    users: Sequence[str],
    items: Sequence[str],
    actions: Sequence[str],
    surfaces: Sequence[str],
    steps: st.SearchStrategy[int],
    lateness: st.SearchStrategy[int],
    attrs: st.SearchStrategy[dict[str, Any] | None] | None = None,
    max_size: int = 60,
) -> list[Event]:
    """Events in arrival order: a clock advancing by ``steps``, one event in four late by
    ``lateness`` (so times repeat, and arrive out of order), each with random fields."""
    events = []
    clock = BASE
    for i in range(draw(st.integers(1, max_size))):
        clock += draw(steps)
        late = draw(st.sampled_from([0, 0, 0, 1]))
        events.append(
            Event(
                event_id=f"e{i}",
                user_id=draw(st.sampled_from(users)),
                item_id=draw(st.sampled_from(items)),
                action=draw(st.sampled_from(actions)),
                surface=draw(st.sampled_from(surfaces)),
                ts=clock - late * draw(lateness),
                attrs=None if attrs is None else draw(attrs),
            )
        )
    return events
