"""The native DecayedScores and MeanVector against the Python reference and naive recomputes.

For random events of several users (negative and zero weights, missing and mixed-type keys,
malformed vectors, late events, equal times), random filters, random batch splits and random
request-time contexts (``as_of`` earlier than the newest events included):

- the state the core builds through ``NativeSignals.apply`` holds exactly the reference's
  fixed-point sums and bucket times, and its bytes do not depend on the batches;
- the core's read equals the reference's read bit for bit (scores, weights and vectors are
  the same floats), refusals included;
- both are within the documented fixed-point bound of a naive float recompute.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import usersignals._core as core
from native_batching import answer, batches, native_states, reference_state, users_of
from usersignals import (
    DecayedScores,
    Event,
    Lookup,
    MeanVector,
    ReadContext,
    Signal,
    action,
    days,
    field,
    hours,
)
from usersignals.aggregations.base import ReadOut
from usersignals.aggregations.context import AS_OF_LOOKBACK_MS
from usersignals.errors import StateCodecError
from usersignals.processing.native import NativeSignals, plan_json
from usersignals.signals.fields import Predicate
from usersignals.state.codec import UserRecord

BASE = 1_767_225_600_000  # 2026-01-01T00:00Z
ITEMS = [f"i{n}" for n in range(12)]
USERS = ["u1", "u2"]
ACTIONS = ["impression", "click", "save", "hide", "other"]
WEIGHTS = {"impression": 0.1, "click": 2.0, "save": 4.0, "hide": -4.0, "other": 0.0}
DIM = 3
# Keys: strings and whole numbers (what the key field kind admits), and some items with
# none. Single-digit numbers: where tied keys mix strings and numbers, the reference orders
# them by repr, and a heap that never compared them does not (docs/native.md, known
# differences); for these keys both orders agree. Vectors: lists and tuples, ints and bools
# among floats, and malformed ones (wrong length, a string component, not finite, not a
# list) that add nothing.
_KEYS: list[Any] = ["sports", "news", "art", 7, 8, None]
_VECTORS: list[Any] = [
    [0.25, -0.5, 1.0],
    (1, 0.0, -0.75),
    [True, 0.125, 3],
    [0.3, 0.2, 0.1],
    [0.5, 0.5],
    [0.5, "x", 1.0],
    [math.nan, 0.0, 1.0],
    "not a vector",
]
TABLE: dict[str, dict[str, Any]] = {
    item: {"category": _KEYS[n % len(_KEYS)], "embedding": _VECTORS[n % len(_VECTORS)]}
    for n, item in enumerate(ITEMS)
    if n != 11  # no record: the fields are missing
}
items = Lookup("items", key="item_id", provides=("category", "embedding"))
FILTERS: list[Predicate | None] = [None, ~action.eq("impression"), field("category").exists()]


def scores_signal(half_life: int, where: Predicate | None, retention: int, top_k: int) -> Signal:
    return Signal(
        name="interest",
        version=1,
        aggregate=DecayedScores(
            key="category", half_life=half_life, weights=WEIGHTS, default_weight=0.5, top_k=top_k
        ),
        where=where,
        enrich=[items.fields("category")],
        retention=retention,
    )


def vector_signal(half_life: int, where: Predicate | None, retention: int) -> Signal:
    return Signal(
        name="taste",
        version=1,
        aggregate=MeanVector(of="embedding", dim=DIM, half_life=half_life, weights=WEIGHTS),
        where=where,
        enrich=[items.fields("category", "embedding")],
        retention=retention,
    )


_STEPS = [0, hours(1), days(1), 3 * days(1)]


@st.composite
def event_lists(draw: st.DrawFn) -> list[Event]:
    events = []
    clock = BASE
    for i in range(draw(st.integers(1, 50))):
        clock += draw(st.one_of(st.integers(0, 10 * 3_600_000), st.sampled_from(_STEPS)))
        late = draw(st.sampled_from([0, 0, 0, 1]))
        ts = clock - late * draw(st.one_of(st.integers(0, 4 * days(1)), st.sampled_from(_STEPS)))
        events.append(
            Event(
                event_id=f"e{i}",
                user_id=draw(st.sampled_from(USERS)),
                item_id=draw(st.sampled_from(ITEMS)),
                action=draw(st.sampled_from(ACTIONS)),
                surface="home",
                ts=ts,
            )
        )
    return events


half_lives = st.sampled_from([hours(1), days(1), days(7)])
retentions = st.sampled_from([days(1), days(3), days(30)])
score_signals = st.builds(
    scores_signal,
    half_life=half_lives,
    where=st.sampled_from(FILTERS),
    retention=retentions,
    top_k=st.sampled_from([2, 20]),
)
vector_signals = st.builds(
    vector_signal, half_life=half_lives, where=st.sampled_from(FILTERS), retention=retentions
)
splits = st.lists(st.integers(0, 50), max_size=5)
contexts = st.builds(
    ReadContext,
    exclude=st.sets(st.sampled_from(["sports", "art", "7"]), max_size=2).map(frozenset),
    limit=st.one_of(st.none(), st.integers(1, 4)),
    until_ms=st.one_of(st.none(), st.integers(BASE, BASE + 20 * days(1))),
    # Earlier than the newest events too: the same answers or the reference's refusals.
    as_of_ms=st.one_of(st.none(), st.integers(BASE, BASE + 20 * days(1))),
    now_ms=st.integers(BASE, BASE + 25 * days(1)),
)


def stored_native(signal: Signal, parts: list[list[Event]]) -> dict[str, bytes]:
    """Each user's native state bytes (the msgpack bin unwrapped)."""
    states = native_states(signal, parts, users_of(parts), TABLE)
    return {user: msgspec.msgpack.decode(data, type=bytes) for user, data in states.items()}


def assert_states_equal_the_reference(
    signal: Signal,
    events: list[Event],
    cuts: list[int],
    parts: Callable[[core.NativePlans, bytes], tuple[Any, ...]],
    reference_parts: Callable[[Any], tuple[Any, ...]],
) -> None:
    """Each user's native state is the same bytes whatever the batches, and its decoded
    ``parts`` equal the reference state's (or neither has a state)."""
    once = stored_native(signal, [events])
    assert stored_native(signal, batches(events, cuts)) == once
    plans = core.NativePlans([plan_json(signal)])
    for user in USERS:
        reference = reference_state(signal, batches(events, cuts), user, TABLE)
        if reference is None:
            assert user not in once
            continue
        assert parts(plans, once[user]) == reference_parts(reference)


@settings(max_examples=40, deadline=None)
@given(events=event_lists(), cuts=splits, signal=score_signals)
def test_native_scores_state_equals_the_reference_whatever_the_batches(
    events: list[Event], cuts: list[int], signal: Signal
) -> None:
    def parts(plans: core.NativePlans, data: bytes) -> tuple[Any, ...]:
        newest, cells, tops = plans.decode_decayed_scores(0, data)
        return newest, tops, {(key, bucket): total for key, bucket, total in cells}

    assert_states_equal_the_reference(
        signal, events, cuts, parts, lambda ref: (ref.newest, ref.tops, ref.cells)
    )


@settings(max_examples=40, deadline=None)
@given(events=event_lists(), cuts=splits, signal=vector_signals)
def test_native_vector_state_equals_the_reference_whatever_the_batches(
    events: list[Event], cuts: list[int], signal: Signal
) -> None:
    assert_states_equal_the_reference(
        signal,
        events,
        cuts,
        lambda plans, data: plans.decode_mean_vector(0, data),
        lambda ref: (ref.newest, ref.buckets, ref.tops),
    )


# The bucket of the as_of holds a later event: refused, naming that event's time. And a
# day's retention read as of four days before the newest event: past the look-back.
_LATER_IN_BUCKET = [
    Event("a", "u1", "i0", "click", "home", BASE + hours(1)),
    Event("b", "u1", "i3", "click", "home", BASE + hours(5)),
]
_PAST_LOOKBACK = [
    Event("a", "u1", "i0", "click", "home", BASE),
    Event("b", "u1", "i3", "click", "home", BASE + days(5)),
]


@settings(max_examples=40, deadline=None)
@given(events=event_lists(), cuts=splits, signal=score_signals, context=contexts)
@example(
    events=_LATER_IN_BUCKET,
    cuts=[],
    signal=scores_signal(days(7), None, days(30), 20),
    context=ReadContext(as_of_ms=BASE + hours(2), now_ms=BASE + days(1)),
)
@example(
    events=_PAST_LOOKBACK,
    cuts=[1],
    signal=scores_signal(days(7), None, days(1), 20),
    context=ReadContext(as_of_ms=BASE + days(1), now_ms=BASE + days(6)),
)
def test_native_scores_read_equals_the_reference_read(
    events: list[Event], cuts: list[int], signal: Signal, context: ReadContext
) -> None:
    native = NativeSignals([signal])
    stored = native_states(signal, batches(events, cuts), users_of([events]), TABLE)
    for user in USERS:
        reference = reference_state(signal, batches(events, cuts), user, TABLE)
        expected = answer(signal.compiled.runtime.read, reference, context)
        got = answer(native.read, signal, stored.get(user), context, user.encode())
        assert got == expected
        if isinstance(got, ReadOut) and isinstance(expected, ReadOut):
            # Same floats, bit for bit, and the same key types (7, not "7").
            assert [(type(e["key"]), e["score"].hex()) for e in got.value] == [
                (type(e["key"]), e["score"].hex()) for e in expected.value
            ]


@settings(max_examples=40, deadline=None)
@given(events=event_lists(), cuts=splits, signal=vector_signals, context=contexts)
@example(
    events=_LATER_IN_BUCKET,
    cuts=[],
    signal=vector_signal(days(7), None, days(30)),
    context=ReadContext(as_of_ms=BASE + hours(2), now_ms=BASE + days(1)),
)
def test_native_vector_read_equals_the_reference_read(
    events: list[Event], cuts: list[int], signal: Signal, context: ReadContext
) -> None:
    native = NativeSignals([signal])
    stored = native_states(signal, batches(events, cuts), users_of([events]), TABLE)
    for user in USERS:
        reference = reference_state(signal, batches(events, cuts), user, TABLE)
        expected = answer(signal.compiled.runtime.read, reference, context)
        got = answer(native.read, signal, stored.get(user), context, user.encode())
        assert got == expected
        if isinstance(got, ReadOut) and isinstance(expected, ReadOut) and got.value["vector"]:
            assert [v.hex() for v in got.value["vector"]] == [
                v.hex() for v in expected.value["vector"]
            ]


def _naive_scores(signal: Signal, events: list[Event], user: str, view: int) -> dict[Any, float]:
    """From scratch, in floats: Σ weight · 2^(-(view - t) / half_life) per key, over the
    accepted events no older than the retention (rounded up to the bucket) before ``view``."""
    spec = signal.aggregate
    assert isinstance(spec, DecayedScores)
    half_life = int(spec.half_life)
    bucket = signal.compiled.runtime.decay.bucket_ms  # type: ignore[attr-defined]
    edge = -(-(view - signal.retention) // bucket) * bucket
    scores: dict[Any, float] = {}
    for event in events:
        row = (event, (TABLE.get(event.item_id, {}),))
        key = row[1][0].get("category")
        weight = WEIGHTS.get(event.action, spec.default_weight)
        accepted = signal.compiled.accepts is None or signal.compiled.accepts(row)
        counted = accepted and key is not None and weight and edge <= event.ts <= view
        if event.user_id == user and counted:
            decay = 2.0 ** ((event.ts - view) / half_life)
            scores[key] = scores.get(key, 0.0) + weight * decay
    return scores


@settings(max_examples=30, deadline=None)
@given(events=event_lists(), signal=score_signals, after=st.integers(0, AS_OF_LOOKBACK_MS))
def test_native_scores_are_within_the_fixed_point_bound_of_a_naive_recompute(
    events: list[Event], signal: Signal, after: int
) -> None:
    native = NativeSignals([signal])
    stored = native_states(signal, [events], users_of([events]), TABLE)
    for user, data in stored.items():
        newest = max(e.ts for e in events if e.user_id == user)
        view = newest + after
        context = ReadContext(as_of_ms=view, limit=10_000, now_ms=view)
        got = native.read(signal, data, context, user.encode())
        assert got is not None
        naive = _naive_scores(signal, events, user, view)
        assert {e["key"] for e in got.value} == set(naive)
        # Each term is rounded to 2^-20 (half of it at most, then decayed): per event.
        bound = len(events) * 2.0**-20
        for entry in got.value:
            assert abs(entry["score"] - naive[entry["key"]]) <= bound


def test_states_of_the_python_codec_are_migrated() -> None:
    events = [
        Event(f"e{i}", "u1", ITEMS[i % 4], "click", "home", BASE + i * hours(5)) for i in range(9)
    ]
    for signal in (
        scores_signal(days(7), None, days(30), 20),
        vector_signal(days(7), None, days(30)),
    ):
        runtime = signal.compiled.runtime
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
        whole = native_states(signal, [events], users_of([events]), TABLE)
        assert bytes(record.states[signal.key]) == whole["u1"]


def test_a_vector_component_beyond_the_native_bound_adds_nothing() -> None:
    """The documented limit: |component| > 2^46 is ignored natively (the reference's
    unbounded integers would count it); processing goes on."""
    signal = vector_signal(days(7), None, days(30))
    table = {"i0": {"embedding": [1e20, 0.0, 0.0]}, "i1": {"embedding": [0.5, 0.5, 0.5]}}
    events = [
        Event("a", "u1", "i0", "click", "home", BASE),
        Event("b", "u1", "i1", "click", "home", BASE + 1),
    ]
    native = NativeSignals([signal])
    stored = native_states(signal, [events], users_of([events]), table)
    got = native.read(signal, stored["u1"], ReadContext(now_ms=BASE + 1), b"u1")
    assert got is not None
    assert got.value["vector"] == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("kind", ["scores", "vector"])
def test_a_native_state_of_another_version_is_a_codec_error(kind: str) -> None:
    signal = (
        scores_signal(days(7), None, days(30), 20)
        if kind == "scores"
        else vector_signal(days(7), None, days(30))
    )
    native = NativeSignals([signal])
    stored = msgspec.msgpack.encode(b"\x09\x00\x00")
    with pytest.raises(StateCodecError):
        native.read(signal, stored, ReadContext(), b"u1")
