"""Distinct read up to an ``until`` inside a bucket that later events share: refused, as an
``as_of`` there is, never counted with the events after ``until``.

Found by a hostile-client trial: one save at 00:30 and 59 saves (59 creators) at 13:00, read
with ``until=01:00`` under day buckets, answered an estimate of 58 while Count and LastN
answered 1 event; only ``as_of`` had the check. The refusal names ``until`` (HTTP 422
``as_of_unavailable``, parameter ``until``) and the ``until`` that is answered: the bucket's
last millisecond. Checked on the Python reference, on the core's read of a stored state and
on the GET route's core-written body.
"""

from __future__ import annotations

import pytest

from usersignals import AsOfError, Distinct, LastN, ReadContext, Signal, SignalRegistry
from usersignals.serving.queries import resolve
from usersignals.serving.reader import SignalReader
from usersignals.testing import event, run_signals

DAY = 86_400_000
MIDNIGHT = 1_767_225_600_000  # a UTC day's start: a bucket's
creators = Signal(name="creators", version=1, aggregate=Distinct(of="item_id"))
EVENTS = [event("u1", "i0", "save", ts=MIDNIGHT + DAY // 48)] + [
    event("u1", f"i{n}", "save", ts=MIDNIGHT + 13 * DAY // 24) for n in range(1, 60)
]
UNTIL = MIDNIGHT + DAY // 24  # 01:00, in the bucket of the 13:00 events
NOW = MIDNIGHT + DAY - 1


def reference_state() -> object:
    runtime = creators.compiled.runtime
    return runtime.apply(None, [(one, ()) for one in EVENTS]).state


def test_the_reference_refuses() -> None:
    with pytest.raises(AsOfError) as info:
        creators.compiled.runtime.read(reference_state(), ReadContext(until_ms=UNTIL, now_ms=NOW))
    assert info.value.earliest_ms == MIDNIGHT + DAY - 1


def test_the_core_refuses_naming_until() -> None:
    with pytest.raises(AsOfError) as info:
        run_signals([creators], EVENTS, context={"until": str(UNTIL)})
    assert info.value.parameter == "until"
    assert "until" in str(info.value)
    assert info.value.earliest_ms == MIDNIGHT + DAY - 1


def test_the_route_body_refuses_naming_until() -> None:
    from usersignals import Engine, MicroBatch, Position
    from usersignals.offline import MemoryStore

    registry = SignalRegistry([creators])
    store = MemoryStore()
    Engine(registry, store).process(
        MicroBatch(EVENTS, [Position("p", i) for i in range(len(EVENTS))])
    )
    query = resolve(registry, f"until={UNTIL}".encode())
    with pytest.raises(AsOfError) as info:
        SignalReader(registry, store).read_body("u1", query, NOW)
    assert info.value.parameter == "until"


@pytest.mark.parametrize("until", [MIDNIGHT - 1, MIDNIGHT + DAY - 1])
def test_an_until_on_a_bucket_edge_is_answered(until: int) -> None:
    answers = run_signals([creators], EVENTS, context={"until": str(until)})
    whole_day = run_signals([creators], EVENTS)["u1"]["creators"]["estimate"]
    assert answers["u1"]["creators"]["estimate"] == (0 if until < MIDNIGHT else whole_day)


def test_without_later_events_in_its_bucket_until_is_answered() -> None:
    early = EVENTS[:1]
    answer = run_signals([creators], early, context={"until": str(UNTIL)})
    assert answer["u1"]["creators"] == {"estimate": 1}


# -- LastN: entries after `until` may have pushed out what the read needs ----------------------

HOUR = 3_600_000
recent = Signal(name="recent", version=1, aggregate=LastN(3, keep=("item_id",)))
ITEMS = ["i0", "i1", "i2", "i0"]
FOUR = [event("u1", item, "click", ts=MIDNIGHT + 10 * n * HOUR) for n, item in enumerate(ITEMS)]


def test_last_n_refuses_an_until_whose_entries_newer_events_pushed_out() -> None:
    """Found by the offline differential fuzz: with four events (the state keeps three), a
    read until 14:00 answered [i1] where the events up to then were [i1, i0]: the oldest had
    been pushed out by events after `until`, and nothing said so."""
    with pytest.raises(AsOfError) as info:
        run_signals([recent], FOUR, context={"until": str(MIDNIGHT + 14 * HOUR)})
    assert info.value.parameter == "until"
    reference = recent.compiled.runtime
    state = reference.apply(None, [(one, ()) for one in FOUR]).state
    context = ReadContext(until_ms=MIDNIGHT + 14 * HOUR, now_ms=MIDNIGHT + 30 * HOUR)
    with pytest.raises(AsOfError):
        reference.read(state, context)


def test_last_n_answers_an_until_its_limit_fills_before_the_pushed_out_ones() -> None:
    answers = run_signals(
        [recent], FOUR, context={"until": str(MIDNIGHT + 24 * HOUR), "limit": "1"}
    )
    assert [entry["item_id"] for entry in answers["u1"]["recent"]] == ["i2"]


@pytest.mark.parametrize("signal", [creators, recent], ids=["distinct", "last_n"])
def test_a_refusal_names_the_parameter_that_ended_the_view_and_its_time(signal: Signal) -> None:
    """Found by the review: with an as_of after the newest event and an until before it,
    the refusal named as_of and told the client to use the as_of it had used; LastN's named
    the wall clock as the time refused."""
    events = EVENTS if signal is creators else FOUR
    until = UNTIL if signal is creators else MIDNIGHT + 14 * HOUR
    context = {"as_of": str(MIDNIGHT + 2 * DAY - 1), "until": str(until)}
    with pytest.raises(AsOfError) as info:
        run_signals([signal], events, context=context)
    assert info.value.parameter == "until"
    assert info.value.as_of_ms == until
    assert f"until {until}" in str(info.value)


# -- a view that ends before it starts is empty: answered, never refused ----------------------


def test_an_until_before_the_retention_s_start_is_an_empty_answer_not_a_refusal() -> None:
    """Found by the offline differential fuzz's second run: with the view's end (an until)
    before its start (the retention back from the view time), no event can count and later
    events cannot change that; Distinct, a full LastN and LastSeen refused such a read, and
    the training set held null where the answer is 0, [] or {}."""
    from usersignals import LastSeen

    seven = "7d"
    signals = [
        Signal(name="creators", version=1, aggregate=Distinct(of="item_id"), retention=seven),
        Signal(name="recent", version=1, aggregate=LastN(2, keep=("item_id",)), retention=seven),
        Signal(name="seen", version=1, aggregate=LastSeen(by="action"), retention=seven),
    ]
    events = [
        event("u1", "i0", "click", ts=MIDNIGHT + 10 * HOUR),
        event("u1", "i1", "click", ts=MIDNIGHT + 12 * HOUR),
        event("u1", "i2", "click", ts=MIDNIGHT + 10 * DAY + 10 * HOUR),
    ]
    context = {"as_of": str(MIDNIGHT + 10 * DAY + 11 * HOUR), "until": str(MIDNIGHT + 11 * HOUR)}
    answers = run_signals(signals, events, context=context)["u1"]
    assert answers == {"creators": {"estimate": 0}, "recent": [], "seen": {}}
