"""The native Count/Sum tiles against the Python reference and a naive recompute.

For random events of several users (late events, equal times, mixed-type and missing group
and summed values), random tile layouts, filters, batch splits and request-time contexts
(windows, since/until, actions/surfaces, as_of earlier than the newest events):

- the state the core builds through ``NativeSignals.apply`` holds exactly the reference's
  cells and exact entries, and its bytes do not depend on the batches (with the real cap of
  exact entries and with a few);
- the core's read equals the reference's (values, types, refusals), and a naive recompute
  from the raw events bounds it: never less, and equal when the window starts at or after
  the exact boundary.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import usersignals._core as core
from native_batching import (
    BASE,
    assert_a_codec_error_naming_the_key,
    batches,
    category_table,
    event_lists,
    native_states,
    reads,
    reference_state,
    states_whatever_the_batches,
)
from usersignals import (
    Count,
    Event,
    Lookup,
    ReadContext,
    Signal,
    Sum,
    TileLayout,
    action,
    days,
    hours,
    minutes,
)
from usersignals.aggregations.base import ReadOut
from usersignals.aggregations.context import retention_start
from usersignals.processing.native import NativeSignals, plan_json
from usersignals.signals.fields import Predicate
from usersignals.state.codec import UserRecord

ITEMS = [f"i{n}" for n in range(12)]
ACTIONS = ["impression", "click", "save"]
SURFACES = ["home", "search"]
USERS = ["u1", "u2"]
# Group values of several types (str, int, a non-integral float, None, missing): the labels
# are Python's str() of them, and 1 / 1.0 / True are never mixed (see docs/native.md).
TABLE = category_table(ITEMS)
items = Lookup("items", key="item_id", provides=("category",))
LAYOUTS = [
    TileLayout(),
    TileLayout(((minutes(5), hours(2)), (hours(1), days(1)), (hours(6), days(8)), (days(1), 0))),
    TileLayout(((minutes(1), days(1)), (days(1), 0))),
]
AGGREGATES: list[Any] = [
    lambda tiles: Count(by=("action",), tiles=tiles),
    lambda tiles: Count(by=("action", "surface"), tiles=tiles),
    lambda tiles: Count(by=("category", "action"), tiles=tiles),
    lambda tiles: Sum(of="attrs.amount", decimals=2, by=("surface",), tiles=tiles),
    lambda tiles: Sum(of="attrs.amount", decimals=0, by=("action", "category"), tiles=tiles),
    # A few exact entries: most states tile some of their last two days.
    lambda tiles: Count(by=("action", "surface"), tiles=tiles, exact_entries=2),
    lambda tiles: Sum(of="attrs.amount", decimals=2, by=("surface",), tiles=tiles, exact_entries=5),
]
FILTERS: list[Predicate | None] = [None, action.isin({"click", "save"})]


def signal_for(aggregate: int, layout: int, where: Predicate | None, retention: int) -> Signal:
    return Signal(
        name="counts",
        version=1,
        aggregate=AGGREGATES[aggregate](LAYOUTS[layout]),
        where=where,
        enrich=[items.fields("category")],
        retention=retention,
    )


_STEPS = [0, hours(1), days(1), days(2)]


_AMOUNTS = st.one_of(
    st.none(),
    st.integers(-50, 1_000),
    st.floats(-10, 100, allow_nan=False),
    st.sampled_from([0.125, 2.5, 0.005, "7", True]),
)
events = event_lists(
    USERS,
    ITEMS,
    ACTIONS,
    SURFACES,
    steps=st.one_of(st.integers(0, 10 * 3_600_000), st.sampled_from(_STEPS)),
    lateness=st.one_of(st.integers(0, days(4)), st.sampled_from(_STEPS)),
    attrs=_AMOUNTS.map(lambda amount: None if amount is None else {"amount": amount}),
)


signals = st.builds(
    signal_for,
    aggregate=st.integers(0, len(AGGREGATES) - 1),
    layout=st.integers(0, len(LAYOUTS) - 1),
    where=st.sampled_from(FILTERS),
    retention=st.sampled_from([days(1), days(3), days(28)]),
)
splits = st.lists(st.integers(0, 60), max_size=5)


def mostly_none(times: st.SearchStrategy[int]) -> st.SearchStrategy[int | None]:
    # Unset two times in three: with every bound set at random most views would be empty.
    return st.one_of(st.none(), st.none(), times)


contexts = st.builds(
    ReadContext,
    window_ms=st.one_of(st.none(), st.sampled_from([hours(1), days(1), days(7)])),
    actions=st.one_of(st.none(), st.sets(st.sampled_from(ACTIONS), min_size=1).map(frozenset)),
    surfaces=st.one_of(st.none(), st.sets(st.sampled_from(SURFACES), min_size=1).map(frozenset)),
    since_ms=mostly_none(st.integers(BASE, BASE + days(10))),
    until_ms=mostly_none(st.integers(BASE, BASE + days(15))),
    # Earlier than the newest events too: the same answers or the reference's refusals.
    as_of_ms=mostly_none(st.integers(BASE, BASE + days(15))),
    now_ms=st.integers(BASE, BASE + days(12)),
)


def cells_of(entries: list[tuple[int, tuple[Any, ...], int]]) -> dict[Any, int]:
    # Keys with their types: 1 == 1.0 in Python, and a stored 2.5 must not come back as "2.5".
    return {(at, tuple((type(v), v) for v in group)): value for at, group, value in entries}


def typed_cells(cells: dict[tuple[int, tuple[Any, ...]], int]) -> dict[Any, int]:
    return cells_of([(at, group, value) for (at, group), value in cells.items()])


@settings(max_examples=100, deadline=None)
@given(events=events, cuts=splits, signal=signals)
def test_native_state_equals_the_reference_whatever_the_batches(
    events: list[Event], cuts: list[int], signal: Signal
) -> None:
    plans = core.NativePlans([plan_json(signal)])
    for _, reference, stored in states_whatever_the_batches(signal, events, cuts, USERS, TABLE):
        assert stored[0] == core.TILES_FORMAT_VERSION
        newest, cells, exact, exact_from = plans.decode_tiles(0, stored)
        assert (newest, exact_from) == (reference.newest, reference.exact_from)
        assert cells_of(cells) == typed_cells(reference.cells)
        assert cells_of(exact) == typed_cells(reference.exact)


def naive_total(signal: Signal, events: list[Event], user: str, start: int, end: int) -> int:
    """From the raw events: the scaled sum (or count) of the accepted events in [start, end]."""
    spec = signal.aggregate
    assert isinstance(spec, Count)
    accepts = signal.compiled.accepts
    total = 0
    for e in events:
        row = (e, (TABLE.get(e.item_id, {}),))
        if e.user_id != user or not start <= e.ts <= end or not (accepts is None or accepts(row)):
            continue
        if not isinstance(spec, Sum):
            total += 1
            continue
        total += round(_amount(e) * 10**spec.decimals)
    return total


def _amount(event: Event) -> float:
    """What a Sum of ``attrs.amount`` adds for ``event`` (0 when it is not a number)."""
    amount = (event.attrs or {}).get("amount")
    if isinstance(amount, int | float) and not isinstance(amount, bool):
        return amount
    return 0


_LATE = [
    Event("a", "u1", "i1", "click", "home", BASE),
    Event("b", "u1", "i2", "click", "home", BASE + days(6)),
    Event("c", "u1", "i3", "save", "home", BASE + days(1), {"amount": 2.5}),
]


@settings(max_examples=100, deadline=None)
@given(events=events, cuts=splits, signal=signals, context=contexts)
@example(
    events=_LATE,
    cuts=[2],
    signal=signal_for(0, 1, None, days(1)),
    context=ReadContext(as_of_ms=BASE + days(1), now_ms=BASE + days(7)),
)
@example(  # a day tile straddling the window's start adds a negative amount: a lower Sum
    events=[
        Event("a", "u1", "i1", "click", "home", BASE + hours(1), {"amount": -1}),
        Event("b", "u1", "i2", "click", "home", BASE + days(5)),
    ],
    cuts=[],
    signal=signal_for(3, 2, None, days(28)),
    context=ReadContext(now_ms=BASE + days(5), window_ms=days(5) - hours(12)),
)
@example(  # the hour tile just before the retention edge ends on it: not counted
    events=[
        Event("a", "u1", "i1", "click", "home", BASE + days(1) - minutes(30)),
        Event("b", "u1", "i2", "click", "home", BASE + days(4)),
    ],
    cuts=[],
    signal=signal_for(0, 0, None, days(3)),
    context=ReadContext(now_ms=BASE + days(4)),
)
def test_native_read_equals_the_reference_and_bounds_the_naive_count(
    events: list[Event], cuts: list[int], signal: Signal, context: ReadContext
) -> None:
    for expected, got in reads(signal, batches(events, cuts), context, USERS, TABLE):
        assert got == expected
        if isinstance(got, ReadOut) and isinstance(expected, ReadOut):
            # int for Count, float for Sum (JSON shows 0 and 0.0 apart), as the reference's
            assert type(got.value["total"]) is type(expected.value["total"])
            assert {type(v) for v in got.value["by"].values()} <= {type(got.value["total"])}
    # Without the group filters, against the raw events: a window that starts at or after
    # the exact boundary is exact; older, the tiles straddling its start can only add events.
    plain = replace(context, actions=None, surfaces=None)
    answers = reads(signal, [events], plain, USERS, TABLE)
    for user, (_, got) in zip(USERS, answers, strict=True):
        reference = reference_state(signal, [events], user, TABLE)
        if not isinstance(got, ReadOut) or reference is None:
            continue
        newest = reference.newest
        start = retention_start(plain.view_time(newest), signal.retention, days(1))
        start = max(start, plain.start(newest) or start)
        exact = naive_total(signal, events, user, start, plain.end(newest))
        scale = 10 ** getattr(signal.aggregate, "decimals", 0)
        total = round(got.value["total"] * scale)
        # A tile straddling the window's start only adds events: a larger total, unless a
        # Sum adds negative amounts.
        if not any(_amount(e) < 0 for e in events if e.user_id == user):
            assert total >= exact
        if start >= reference.exact_from:
            assert total == exact


def test_a_tiles_state_of_the_python_codec_is_migrated() -> None:
    signal = signal_for(2, 0, None, days(28))
    runtime = signal.compiled.runtime
    events = [
        Event(f"e{i}", "u1", ITEMS[i], "click", "home", BASE + i * hours(9)) for i in range(10)
    ]
    rows = [(e, (TABLE.get(e.item_id, {}),)) for e in events[:7]]
    fields = msgspec.msgpack.decode(runtime.encode(runtime.apply(None, rows).state))
    # A msgpack array of four fields: the old form, before the exact boundary was kept.
    legacy = msgspec.msgpack.encode(fields[:4])
    native = NativeSignals([signal])
    context = ReadContext(window_ms=days(2), now_ms=BASE + days(4))
    assert native.read(signal, legacy, context, b"u1") == runtime.read(
        runtime.decode(legacy), context
    )
    record = UserRecord({}, {signal.key: msgspec.Raw(legacy)})
    states, applied, _ = native.apply(events[7:], [(b"u1", record, [0, 1, 2])], {"items": TABLE})
    native.place(record.states, states[0])
    assert applied == {signal.key: 3}
    assert bytes(record.states[signal.key]) == native_states(signal, [events], USERS, TABLE)["u1"]


@pytest.mark.parametrize(
    "stored",
    [
        msgspec.msgpack.encode(b"\x07rest"),  # a future format version
        msgspec.msgpack.encode(b"\x01\x80"),  # truncated
        msgspec.msgpack.encode(b"\x01\x02\x00\x01\x00\x05\x01\x00"),  # group 5 of 0
    ],
)
def test_a_corrupt_tiles_state_is_a_codec_error_naming_the_key(stored: bytes) -> None:
    assert_a_codec_error_naming_the_key(signal_for(0, 0, None, days(3)), stored, TABLE)


def test_a_lookup_keyed_by_a_nested_attribute_joins_as_in_the_reference() -> None:
    """A lookup key at ``attrs.ref.item`` is read from the nested object (the native glue
    looked up the top-level key "ref.item", so every event missed its record)."""
    nested = Lookup("items", key="attrs.ref.item", provides=("category",))
    signal = Signal(
        name="by_category",
        version=1,
        aggregate=Count(by=("category",)),
        enrich=[nested.fields("category")],
        retention=days(3),
    )
    events = [
        Event(f"e{i}", "u1", "x", "click", "home", BASE + i, {"ref": {"item": ITEMS[i]}})
        for i in range(4)
    ]
    native = NativeSignals([signal])
    record = UserRecord({}, {})
    states, _, _ = native.apply(events, [(b"u1", record, [0, 1, 2, 3])], {"items": TABLE})
    native.place(record.states, states[0])
    context = ReadContext(now_ms=BASE + days(1))
    got = native.read(signal, bytes(record.states[signal.key]), context, b"u1")
    assert got is not None
    assert got.value == {"total": 4, "by": {"1": 1, "2.5": 1, "None": 1, "c0": 1}}


def test_groups_whose_labels_read_alike_add_up_under_one_label() -> None:
    """``1`` and ``"1"`` are two groups (as in the reference's dict) with one label, "1"."""
    table = {"i1": {"category": 1}, "i2": {"category": "1"}, "i3": {"category": None}}
    signal = Signal(
        name="by_category",
        version=1,
        aggregate=Count(by=("category",)),
        enrich=[items.fields("category")],
        retention=days(3),
    )
    events = [Event(f"e{i}", "u1", f"i{i}", "click", "home", BASE + i) for i in (1, 2, 3)]
    context = ReadContext(now_ms=BASE + days(1))
    [(expected, got)] = reads(signal, [events], context, ["u1"], table)
    assert got == expected
    assert got.value == {"total": 3, "by": {"1": 2, "None": 1}}
