"""The native LastN against the Python reference and a naive recompute from the raw events.

For random events of several users (late, duplicated items, mixed-type and missing fields),
random filters, random batch splits and random request-time contexts:

- the state the core builds through ``NativeSignals.apply`` (the engine's seam: columns in,
  state bytes out) holds exactly the entries the Python reference ``LastN`` holds;
- its bytes are the same whatever the batch boundaries (canonical state);
- the core's read of it equals the reference's read, and a naive recompute's.
"""

from __future__ import annotations

import ast
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import usersignals._core as core
from native_batching import (
    answer,
    assert_a_codec_error_naming_the_key,
    batches,
    native_states,
    reference_state,
)
from usersignals import Event, LastN, Lookup, ReadContext, Signal, action, attr, days, field
from usersignals.aggregations.base import ReadOut
from usersignals.aggregations.context import AS_OF_LOOKBACK_MS
from usersignals.errors import AsOfError
from usersignals.processing.native import NativeSignals, plan_json
from usersignals.signals.fields import Predicate
from usersignals.state.codec import UserRecord

BASE = 1_767_225_600_000  # 2026-01-01T00:00Z
ITEMS = [f"i{n:03}" for n in range(10)]  # fixed-width digits: the digits form
ACTIONS = ["impression", "click", "save", "hide"]
SURFACES = ["home", "search", "board"]
USERS = ["u1", "u2", "u3"]
# Mixed types on purpose (str, int, float, None, missing): the core must keep each exactly.
TABLE: dict[str, dict[str, Any]] = {
    item: {"category": [f"c{n % 3}", n, n / 2, None][n % 4]}
    for n, item in enumerate(ITEMS)
    if n != 9  # the last item has no record: its events have the field missing
}
items = Lookup("items", key="item_id", provides=("category",))
FILTERS: list[Predicate | None] = [
    None,
    action.isin({"click", "save"}),
    ~action.eq("impression") & field("category").exists(),
    attr("dwell").ge(10) | field("surface").eq("board"),
    field("category").isin({"c1", 2, 4.5}),
]


def signal_for(n: int, dedupe: bool, where: Predicate | None, retention: int) -> Signal:
    keep = ("item_id", "action", "surface", "category", "attrs.dwell", "attrs.extra")
    return Signal(
        name="recent",
        version=1,
        aggregate=LastN(n, keep=keep, dedupe_by="item_id" if dedupe else None),
        where=where,
        enrich=[items.fields("category")],
        retention=retention,
    )


_STEPS = [0, 3_600_000, 86_400_000, 3 * 86_400_000]
# (Not integers beyond 64 bits: the reference's msgpack codec cannot hold them.)
_EXTRAS: list[Any] = ["x", 7, [1, "two", None], {"os": "ios", "v": [1.5, {"a": True}]}, [], {},
                      {"é": "ü"}]  # fmt: skip


@st.composite
def event_lists(draw: st.DrawFn, max_size: int = 60) -> list[Event]:
    events = []
    clock = BASE
    for i in range(draw(st.integers(1, max_size))):
        # Steps of whole hours and days make events land exactly on a retention's edge.
        clock += draw(st.one_of(st.integers(0, 8 * 3_600_000), st.sampled_from(_STEPS)))
        late = draw(st.sampled_from([0, 0, 0, 1]))
        ts = clock - late * draw(st.one_of(st.integers(0, 3 * 86_400_000), st.sampled_from(_STEPS)))
        dwell = draw(st.one_of(st.none(), st.integers(-5, 50), st.floats(0, 99, allow_nan=False)))
        # Kept as they came: lists and objects (once stored as null by the core).
        extra = draw(st.one_of(st.none(), st.sampled_from(_EXTRAS)))
        attrs = {
            name: value for name, value in (("dwell", dwell), ("extra", extra)) if value is not None
        }
        events.append(
            Event(
                event_id=draw(st.sampled_from([f"e{i}", f"e{i}", "dup"])),
                user_id=draw(st.sampled_from(USERS)),
                item_id=draw(st.sampled_from(ITEMS)),
                action=draw(st.sampled_from(ACTIONS)),
                surface=draw(st.sampled_from(SURFACES)),
                ts=ts,
                attrs=attrs or None,
            )
        )
    return events


signals = st.builds(
    signal_for,
    n=st.integers(1, 12),
    dedupe=st.booleans(),
    where=st.sampled_from(FILTERS),
    retention=st.sampled_from([days(1), days(3), days(30)]),
)
splits = st.lists(st.integers(0, 60), max_size=6)
contexts = st.builds(
    ReadContext,
    window_ms=st.one_of(st.none(), st.sampled_from([3_600_000, 86_400_000, 5 * 86_400_000])),
    actions=st.one_of(st.none(), st.sets(st.sampled_from(ACTIONS), min_size=1).map(frozenset)),
    surfaces=st.one_of(st.none(), st.sets(st.sampled_from(SURFACES), min_size=1).map(frozenset)),
    limit=st.one_of(st.none(), st.integers(1, 8)),
    dedupe=st.booleans(),
    exclude=st.sets(st.sampled_from(ITEMS), max_size=3).map(frozenset),
    until_ms=st.one_of(st.none(), st.integers(BASE, BASE + 20 * 86_400_000)),
    # Earlier than the newest events too: exact answers or the reference's refusals.
    as_of_ms=st.one_of(st.none(), st.integers(BASE, BASE + 20 * 86_400_000)),
    now_ms=st.integers(BASE, BASE + 25 * 86_400_000),
)


def naive(signal: Signal, events: Sequence[Event], user: str) -> list[tuple[Any, ...]]:
    """From scratch: the accepted events within the retention and the as_of look-back of the
    newest, top n by (ts, tie)."""
    accepts = signal.compiled.accepts
    spec = signal.aggregate
    assert isinstance(spec, LastN)
    mine = [
        (e.ts, zlib.crc32(e.event_id.encode()), e.item_id, e.action, e.surface,
         TABLE.get(e.item_id, {}).get("category"), (e.attrs or {}).get("dwell"),
         (e.attrs or {}).get("extra"))
        for e in sorted(events, key=lambda e: e.ts)
        if e.user_id == user and (accepts is None or accepts((e, (TABLE.get(e.item_id, {}),))))
    ]  # fmt: skip
    if not mine:
        return []
    newest = max(entry[0] for entry in mine)
    kept = sorted(
        (e for e in mine if e[0] >= newest - signal.retention - AS_OF_LOOKBACK_MS),
        key=lambda e: (e[0], e[1]),
        reverse=True,
    )
    if spec.dedupe_by:
        seen: set[str] = set()
        kept = [e for e in kept if not (e[2] in seen or seen.add(e[2]))]
    return kept[: spec.n]


def typed(entries: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    # 1 == 1.0 == True in Python: compare with the types, so a stored 2.0 cannot become 2.
    return [tuple((type(v), v) for v in entry) for entry in entries]


# An event exactly one retention older than the newest is kept (the edge is inclusive).
_EDGE = [
    Event("a", "u1", "i1", "click", "home", BASE),
    Event("b", "u1", "i2", "click", "home", BASE + days(1)),
]


@settings(max_examples=120, deadline=None)
@given(events=event_lists(), cuts=splits, signal=signals)
@example(events=_EDGE, cuts=[], signal=signal_for(5, False, None, days(1)))
@example(events=_EDGE, cuts=[1], signal=signal_for(5, False, None, days(1)))
def test_native_state_equals_reference_and_naive_whatever_the_batches(
    events: list[Event], cuts: list[int], signal: Signal
) -> None:
    core_plans = core.NativePlans([plan_json(signal)])
    once = native_states(signal, [events], USERS, TABLE)
    batched = native_states(signal, batches(events, cuts), USERS, TABLE)
    assert batched == once
    for user in USERS:
        reference = reference_state(signal, batches(events, cuts), user, TABLE)
        if reference is None:
            assert user not in once
            continue
        stored = msgspec.msgpack.decode(once[user], type=bytes)
        entries = core_plans.decode_last_n(0, stored)
        assert typed(entries) == typed(reference)
        assert typed(entries) == typed(naive(signal, events, user))


# A full LastN(2) read as of a time before its newest event, which took the room of older
# events the answer needs: refused, naming the newest event's time.
_CROWDED = [
    Event("a", "u1", "i1", "click", "home", BASE),
    Event("b", "u1", "i2", "click", "home", BASE + 3_600_000),
    Event("c", "u1", "i3", "click", "home", BASE + 7_200_000),
]


@settings(max_examples=120, deadline=None)
@given(events=event_lists(), cuts=splits, signal=signals, context=contexts)
@example(
    events=_CROWDED,
    cuts=[],
    signal=signal_for(2, False, None, days(30)),
    context=ReadContext(as_of_ms=BASE + 5_400_000, now_ms=BASE + 86_400_000),
)
def test_native_read_equals_reference_read(
    events: list[Event], cuts: list[int], signal: Signal, context: ReadContext
) -> None:
    native = NativeSignals([signal])
    stored = native_states(signal, batches(events, cuts), USERS, TABLE)
    for user in USERS:
        reference = reference_state(signal, batches(events, cuts), user, TABLE)
        expected = answer(signal.compiled.runtime.read, reference, context)
        got = answer(native.read, signal, stored.get(user), context, user.encode())
        if not isinstance(expected, ReadOut) or not isinstance(got, ReadOut):
            assert got == expected
            continue
        assert got.newest_ms == expected.newest_ms
        assert [typed([e.values()]) for e in got.value] == [
            typed([e.values()]) for e in expected.value
        ]
        assert got.value == expected.value


def test_a_refused_native_read_names_the_signal() -> None:
    """The reader shows the native refusal as the reference's, with the signal's name."""
    signal = signal_for(2, dedupe=False, where=None, retention=days(30))
    stored = native_states(signal, [_CROWDED], USERS, TABLE)["u1"]
    context = ReadContext(as_of_ms=BASE + 5_400_000, now_ms=BASE + 86_400_000)
    with pytest.raises(AsOfError) as caught:
        NativeSignals([signal]).read(signal, stored, context, b"u1")
    assert caught.value.signal == signal.name
    assert (caught.value.as_of_ms, caught.value.earliest_ms) == (BASE + 5_400_000, BASE + 7_200_000)


def test_a_state_of_the_python_codec_is_migrated_not_misread() -> None:
    """Stores written before the native core hold msgpack LastN states: they are read, and
    the next batch rewrites them in the native form with the same entries."""
    signal = signal_for(5, dedupe=False, where=None, retention=days(30))
    runtime = signal.compiled.runtime
    events = [
        Event(f"e{i}", "u1", ITEMS[i], "click", "home", BASE + i * 1000, {"dwell": i})
        for i in range(8)
    ]
    legacy = runtime.encode(
        runtime.apply(None, [(e, (TABLE.get(e.item_id, {}),)) for e in events[:6]]).state
    )
    assert legacy[0] in (0x92, 0x95)  # a msgpack array: the old form
    native = NativeSignals([signal])
    context = ReadContext(now_ms=BASE + 86_400_000)
    got = native.read(signal, legacy, context, b"u1")
    expected = runtime.read(runtime.decode(legacy), context)
    assert got == expected

    record = UserRecord({}, {signal.key: msgspec.Raw(legacy)})
    states, applied, _ = native.apply(events[6:], [(b"u1", record, [0, 1])], {"items": TABLE})
    native.place(record.states, states[0])
    assert applied == {signal.key: 2}
    assert bytes(record.states[signal.key]) == native_states(signal, [events], USERS, TABLE)["u1"]


# A LastN(5) state keeping item_id, action, surface, as the format version 1 encoder wrote
# it (main before the digits and packed dictionary forms): five clicks and saves of
# i00000000..i00000008, one second apart, ties 1000..1004.
_V1_STATE = bytes.fromhex(
    "010305c0ded5edee66e807e807e807e807e8030000e9030000ea030000eb030000ec0300000208"
    "69303030303030300130013701340131013800020505636c69636b05047361766500010001000204"
    "686f6d650000000000"
)


def test_a_state_of_format_version_1_is_read_and_rewritten_as_version_2() -> None:
    signal = Signal(
        name="recent",
        version=1,
        aggregate=LastN(5, keep=("item_id", "action", "surface")),
        retention=days(30),
    )
    native = NativeSignals([signal])
    stored = msgspec.msgpack.encode(_V1_STATE)  # as the record embeds it: a msgpack bin
    got = native.read(signal, stored, ReadContext(now_ms=BASE + days(1)), b"u1")
    assert got is not None
    assert [(e["ts"] - BASE, e["item_id"], e["action"]) for e in got.value] == [
        (4000, "i00000000", "click"),
        (3000, "i00000007", "save"),
        (2000, "i00000004", "click"),
        (1000, "i00000001", "save"),
        (0, "i00000008", "click"),
    ]
    record = UserRecord({}, {signal.key: msgspec.Raw(stored)})
    later = Event("e9", "u1", "i00000009", "save", "home", BASE + 5000)
    states, _, _ = native.apply([later], [(b"u1", record, [0])], {})
    native.place(record.states, states[0])
    rewritten = msgspec.msgpack.decode(bytes(record.states[signal.key]), type=bytes)
    assert rewritten[0] == core.LAST_N_FORMAT_VERSION == 2
    plans = core.NativePlans([plan_json(signal)])
    entries = plans.decode_last_n(0, rewritten)
    assert [entry[2] for entry in entries] == [
        "i00000009", "i00000000", "i00000007", "i00000004", "i00000001"
    ]  # fmt: skip
    assert entries[1:] == plans.decode_last_n(0, _V1_STATE)[:4]


@pytest.mark.parametrize(
    "stored",
    [
        msgspec.msgpack.encode(b"\x07rest"),  # a future format version
        msgspec.msgpack.encode(b"\x01\x05\xff"),  # truncated
        b"\xc1",  # not msgpack at all
    ],
)
def test_a_corrupt_state_is_a_codec_error_naming_the_key(stored: bytes) -> None:
    signal = signal_for(5, dedupe=False, where=None, retention=days(30))
    assert_a_codec_error_naming_the_key(signal, stored, TABLE)


def test_the_stub_declares_what_the_module_has() -> None:
    """``_core.pyi`` is what mypy sees: every name and method it declares must exist."""
    stub = ast.parse((Path(core.__file__).parent / "_core.pyi").read_text())
    for node in stub.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            assert hasattr(core, node.target.id)
        elif isinstance(node, ast.ClassDef):
            cls = getattr(core, node.name)
            for member in node.body:
                if isinstance(member, ast.FunctionDef):
                    assert hasattr(cls, member.name), f"{node.name}.{member.name}"


def test_a_nested_attribute_path_reads_as_in_the_reference() -> None:
    """``attrs.device.os`` reaches into the nested object, in filters and kept fields alike
    (the native glue read the top-level key "device.os": nothing matched)."""
    signal = Signal(
        name="ios",
        version=1,
        aggregate=LastN(5, keep=("item_id", "attrs.device.os")),
        where=field("attrs.device.os").eq("ios"),
        retention=days(30),
    )
    events = [
        Event("a", "u1", "i1", "click", "home", BASE, {"device": {"os": "ios"}}),
        Event("b", "u1", "i2", "click", "home", BASE + 1, {"device": {"os": "android"}}),
        Event("c", "u1", "i3", "click", "home", BASE + 2, {"device": ["ios"]}),
    ]
    context = ReadContext(now_ms=BASE + days(1))
    stored = native_states(signal, [events], ["u1"], {})["u1"]
    got = NativeSignals([signal]).read(signal, stored, context, b"u1")
    expected = signal.compiled.runtime.read(reference_state(signal, [events], "u1", {}), context)
    assert got == expected
    assert got is not None
    assert got.value == [{"ts": BASE, "item_id": "i1", "attrs.device.os": "ios"}]
