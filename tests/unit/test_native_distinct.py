"""The native Distinct against the Python reference (registers, bytes and estimates).

For random events of several users (mixed-type and missing values, late events, equal
times), random filters, random batch splits and random windows: the state the core builds
through ``NativeSignals.apply`` holds exactly the reference's registers per bucket, its bytes
do not depend on the batches, and the core's estimate equals the reference's.
"""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import example, given, settings
from hypothesis import strategies as st

import usersignals._core as core
from native_batching import event_lists, native_states, reads, states_whatever_the_batches
from usersignals import Distinct, Event, Lookup, ReadContext, Signal, action, days, field, hours
from usersignals.processing.native import NativeSignals, plan_json
from usersignals.signals.fields import Predicate
from usersignals.state.codec import UserRecord

BASE = 1_767_225_600_000  # 2026-01-01T00:00Z
ITEMS = [f"i{n}" for n in range(40)]
USERS = ["u1", "u2"]
# str(), which the hash reads, differs by type: "7", "7.0", "True", "c7".
TABLE: dict[str, dict[str, Any]] = {
    item: {"creator_id": [f"c{n % 13}", n % 9, n / 4, n % 2 == 0, None][n % 5]}
    for n, item in enumerate(ITEMS)
    if n % 11 != 3  # some items have no record
}
items = Lookup("items", key="item_id", provides=("creator_id",))
FILTERS: list[Predicate | None] = [
    None,
    action.isin({"click", "save"}),
    field("creator_id").exists(),
]


def signal_for(precision: int, bucket: int, where: Predicate | None, retention: int) -> Signal:
    return Signal(
        name="creators",
        version=1,
        aggregate=Distinct(of="creator_id", precision=precision, bucket=bucket),
        where=where,
        enrich=[items.fields("creator_id")],
        retention=retention,
    )


events = event_lists(
    USERS,
    ITEMS,
    ["impression", "click", "save"],
    ["home"],
    steps=st.one_of(st.integers(0, 6 * 3_600_000), st.sampled_from([0, hours(12)])),
    lateness=st.integers(0, 2 * 86_400_000),
    max_size=80,
)


signals = st.builds(
    signal_for,
    precision=st.sampled_from([4, 6, 8]),
    bucket=st.sampled_from([hours(6), days(1)]),
    where=st.sampled_from(FILTERS),
    retention=st.sampled_from([days(1), days(3), days(20)]),
)
windows = st.builds(
    ReadContext,
    window_ms=st.one_of(st.none(), st.sampled_from([hours(1), days(1), days(4)])),
    until_ms=st.one_of(st.none(), st.integers(BASE, BASE + 15 * 86_400_000)),
    # Earlier than the newest events too: the same estimates or the reference's refusals.
    as_of_ms=st.one_of(st.none(), st.integers(BASE, BASE + 15 * 86_400_000)),
    now_ms=st.integers(BASE, BASE + 20 * 86_400_000),
)


@settings(max_examples=100, deadline=None)
@given(events=events, cuts=st.lists(st.integers(0, 80), max_size=5), signal=signals)
def test_native_registers_equal_the_reference_whatever_the_batches(
    events: list[Event], cuts: list[int], signal: Signal
) -> None:
    plans = core.NativePlans([plan_json(signal)])
    for _, reference, stored in states_whatever_the_batches(signal, events, cuts, USERS, TABLE):
        newest, buckets = plans.decode_distinct(0, stored)
        assert (newest, buckets) == (reference.newest, reference.buckets)


# Buckets of the first day expired (a day's retention and the two-day look-back before the
# newest event, five days later): an as_of on the first day is refused.
_EXPIRED = [
    Event("a", "u1", "i0", "click", "home", BASE),
    Event("b", "u1", "i1", "click", "home", BASE + days(5)),
]


@settings(max_examples=100, deadline=None)
@given(events=events, signal=signals, context=windows)
@example(
    events=_EXPIRED,
    signal=signal_for(6, days(1), None, days(1)),
    context=ReadContext(as_of_ms=BASE + hours(12), now_ms=BASE + days(6)),
)
def test_native_estimate_equals_the_reference(
    events: list[Event], signal: Signal, context: ReadContext
) -> None:
    for expected, got in reads(signal, [events], context, USERS, TABLE):
        assert got == expected


def test_a_distinct_state_of_the_python_codec_is_migrated() -> None:
    signal = signal_for(6, days(1), None, days(20))
    runtime = signal.compiled.runtime
    events = [
        Event(f"e{i}", "u1", ITEMS[i], "click", "home", BASE + i * hours(5)) for i in range(9)
    ]
    rows = [(e, (TABLE.get(e.item_id, {}),)) for e in events[:6]]
    legacy = runtime.encode(runtime.apply(None, rows).state)
    native = NativeSignals([signal])
    context = ReadContext(now_ms=BASE + days(3))
    assert native.read(signal, legacy, context, b"u1") == runtime.read(
        runtime.decode(legacy), context
    )
    record = UserRecord({}, {signal.key: msgspec.Raw(legacy)})
    states, _, _ = native.apply(events[6:], [(b"u1", record, [0, 1, 2])], {"items": TABLE})
    native.place(record.states, states[0])
    assert bytes(record.states[signal.key]) == native_states(signal, [events], USERS, TABLE)["u1"]
