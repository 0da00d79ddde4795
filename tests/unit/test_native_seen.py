"""The native FirstSeen/LastSeen against the Python reference and a naive recompute.

For random events of several users (late events, equal times, group values of several types
and missing), random filters, batch splits and request-time contexts: the state the core
builds through ``NativeSignals.apply`` holds the reference's times (and the naive min / max
per group), its bytes do not depend on the batches, and the core's read equals the
reference's, refusals included.
"""

from __future__ import annotations

import msgspec
from hypothesis import example, given, settings
from hypothesis import strategies as st

import usersignals._core as core
from native_batching import (
    BASE,
    batches,
    category_table,
    event_lists,
    native_states,
    reads,
    states_whatever_the_batches,
)
from usersignals import Event, FirstSeen, LastSeen, Lookup, ReadContext, Signal, action, days, hours
from usersignals.aggregations.context import AS_OF_LOOKBACK_MS
from usersignals.processing.native import NativeSignals, plan_json
from usersignals.signals.fields import Predicate
from usersignals.state.codec import UserRecord

ITEMS = [f"i{n}" for n in range(10)]
ACTIONS = ["impression", "click", "save"]
SURFACES = ["home", "search"]
USERS = ["u1", "u2"]
# The group is str() of the value: "c1", "2", "2.5", "None" (and "None" when missing too).
TABLE = category_table(ITEMS)
items = Lookup("items", key="item_id", provides=("category",))
FILTERS: list[Predicate | None] = [None, action.isin({"click", "save"})]


def signal_for(latest: bool, by: str | None, where: Predicate | None, retention: int) -> Signal:
    kind = LastSeen if latest else FirstSeen
    return Signal(
        name="seen",
        version=1,
        aggregate=kind(by=by),
        where=where,
        enrich=[items.fields("category")],
        retention=retention,
    )


events = event_lists(
    USERS,
    ITEMS,
    ACTIONS,
    SURFACES,
    steps=st.one_of(st.integers(0, 12 * 3_600_000), st.sampled_from([0, days(1)])),
    lateness=st.integers(0, days(5)),
    max_size=50,
)


signals = st.builds(
    signal_for,
    latest=st.booleans(),
    by=st.sampled_from([None, "action", "surface", "category"]),
    where=st.sampled_from(FILTERS),
    retention=st.sampled_from([days(1), days(3), days(30)]),
)
splits = st.lists(st.integers(0, 50), max_size=5)
contexts = st.builds(
    ReadContext,
    actions=st.one_of(st.none(), st.sets(st.sampled_from(ACTIONS), min_size=1).map(frozenset)),
    surfaces=st.one_of(st.none(), st.sets(st.sampled_from(SURFACES), min_size=1).map(frozenset)),
    until_ms=st.one_of(st.none(), st.integers(BASE, BASE + days(20))),
    as_of_ms=st.one_of(st.none(), st.integers(BASE, BASE + days(20))),
    now_ms=st.integers(BASE, BASE + days(25)),
)


def naive(signal: Signal, events: list[Event], user: str) -> tuple[int, dict[str, int]]:
    """From scratch: the newest time, and per group the earliest time ever (FirstSeen) or
    the latest within the retention and look-back of the newest (LastSeen)."""
    spec = signal.aggregate
    assert isinstance(spec, LastSeen)
    accepts = signal.compiled.accepts
    mine = [
        e
        for e in events
        if e.user_id == user and (accepts is None or accepts((e, (TABLE.get(e.item_id, {}),))))
    ]
    newest = max(e.ts for e in mine)
    latest = not isinstance(spec, FirstSeen)
    cutoff = newest - signal.retention - AS_OF_LOOKBACK_MS if latest else -1
    times: dict[str, int] = {}
    for e in mine:
        if e.ts < cutoff:
            continue
        value = {"action": e.action, "surface": e.surface}.get(spec.by or "")
        if spec.by == "category":
            value = TABLE.get(e.item_id, {}).get("category")
        group = "" if spec.by is None else str(value)
        have = times.get(group, e.ts)
        times[group] = max(have, e.ts) if latest else min(have, e.ts)
    return newest, times


@settings(max_examples=100, deadline=None)
@given(events=events, cuts=splits, signal=signals)
def test_native_state_equals_the_reference_and_naive_whatever_the_batches(
    events: list[Event], cuts: list[int], signal: Signal
) -> None:
    plans = core.NativePlans([plan_json(signal)])
    for user, reference, stored in states_whatever_the_batches(signal, events, cuts, USERS, TABLE):
        assert stored[0] == core.SEEN_FORMAT_VERSION
        assert plans.decode_seen(0, stored) == (reference.newest, reference.times)
        assert plans.decode_seen(0, stored) == naive(signal, events, user)


# A LastSeen read as of a time before the latest click: the click before it is unknown.
_HIDDEN = [
    Event("a", "u1", "i1", "click", "home", BASE),
    Event("b", "u1", "i2", "click", "home", BASE + hours(5)),
]


@settings(max_examples=100, deadline=None)
@given(events=events, cuts=splits, signal=signals, context=contexts)
@example(
    events=_HIDDEN,
    cuts=[1],
    signal=signal_for(True, "action", None, days(3)),
    context=ReadContext(as_of_ms=BASE + hours(1), now_ms=BASE + days(1)),
)
@example(  # the save is newer than the look-back: the click's retention is unknown then
    events=[_HIDDEN[0], Event("c", "u1", "i3", "save", "home", BASE + days(3))],
    cuts=[],
    signal=signal_for(True, "action", None, days(30)),
    context=ReadContext(actions=frozenset({"click"}), as_of_ms=BASE + hours(12), now_ms=BASE),
)
def test_native_read_equals_the_reference_read(
    events: list[Event], cuts: list[int], signal: Signal, context: ReadContext
) -> None:
    for expected, got in reads(signal, batches(events, cuts), context, USERS, TABLE):
        assert got == expected


def test_a_seen_state_of_the_python_codec_is_migrated() -> None:
    signal = signal_for(True, "action", None, days(30))
    runtime = signal.compiled.runtime
    events = [
        Event(f"e{i}", "u1", ITEMS[i], ACTIONS[i % 3], "home", BASE + i * hours(7))
        for i in range(8)
    ]
    rows = [(e, (TABLE.get(e.item_id, {}),)) for e in events[:5]]
    legacy = runtime.encode(runtime.apply(None, rows).state)
    assert legacy[0] == 0x92  # a msgpack array: the old form
    native = NativeSignals([signal])
    context = ReadContext(now_ms=BASE + days(2))
    assert native.read(signal, legacy, context, b"u1") == runtime.read(
        runtime.decode(legacy), context
    )
    record = UserRecord({}, {signal.key: msgspec.Raw(legacy)})
    states, _, _ = native.apply(events[5:], [(b"u1", record, [0, 1, 2])], {"items": TABLE})
    native.place(record.states, states[0])
    assert bytes(record.states[signal.key]) == native_states(signal, [events], USERS, TABLE)["u1"]
