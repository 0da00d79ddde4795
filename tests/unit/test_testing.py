"""usersignals.testing: a signal tested in a few lines, through the real engine, in memory."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from usersignals import (
    Count,
    DecayedScores,
    Event,
    InvalidEventError,
    LastN,
    Lookup,
    Signal,
    action,
)
from usersignals.errors import ConfigurationError
from usersignals.testing import assert_signal, event, run_signals

NOW = 1_767_225_600_000
items = Lookup("items", key="item_id", provides=("category",))

clicks = Signal(
    name="clicks",
    version=1,
    where=action.eq("click"),
    aggregate=Count(by="surface"),
    retention="28d",
)
saves = Signal(
    name="saves",
    version=1,
    where=action.isin({"save"}),
    enrich=[items.fields("category")],
    aggregate=LastN(10, keep=("item_id", "category"), dedupe_by="item_id"),
    retention=timedelta(days=90),
)
interests = Signal(
    name="interests",
    version=1,
    enrich=[items.fields("category")],
    aggregate=DecayedScores(key="category", half_life="7d", weights={"save": 4}, top_k=3),
    retention="60d",
)
TABLES = {"items": {"i1": {"category": "cats"}, "i2": {"category": "dogs"}}}


def test_run_signals_returns_every_users_answers() -> None:
    events = [
        event("u1", "i1", "click", ts=NOW - 60_000, surface="search"),
        event("u1", "i2", "save", ts=NOW - 30_000),
        event("u1", "i1", "save", ts=NOW),
        event("u2", "i2", "click", ts=NOW - 10_000),
    ]
    answers = run_signals([clicks, saves], events, tables=TABLES)
    assert sorted(answers) == ["u1", "u2"]
    assert answers["u1"]["clicks"] == {"total": 1, "by": {"search": 1}}
    assert answers["u2"]["clicks"] == {"total": 1, "by": {"home": 1}}
    assert [entry["category"] for entry in answers["u1"]["saves"]] == ["cats", "dogs"]
    assert answers["u2"]["saves"] == []
    assert answers.report.events == 4


def test_answers_are_read_as_of_the_newest_event() -> None:
    answers = run_signals(
        [clicks], [event("u1", "i1", "click", ts=NOW - 5_000), event("u2", "i1", "click", ts=NOW)]
    )
    assert answers.result("u1", "clicks").age_ms == 5_000
    assert answers.result("u2", "clicks").age_ms == 0


def test_the_context_is_the_apis_parameters() -> None:
    events = [
        event("u1", "i1", "click", ts=NOW - 2 * 3_600_000),
        event("u1", "i1", "click", ts=NOW),
    ]
    assert run_signals([clicks], events, context={"window": "1h"})["u1"]["clicks"]["total"] == 1
    assert run_signals([clicks], events, context={"window": "1d"})["u1"]["clicks"]["total"] == 2


def test_micro_batches_give_the_same_answers_as_one_batch() -> None:
    events = [
        event("u1", f"i{n % 2 + 1}", ("save", "click")[n % 2], ts=NOW - n * 60_000)
        for n in range(20)
    ]
    one = run_signals([clicks, saves, interests], events, tables=TABLES)
    many = run_signals([clicks, saves, interests], events, tables=TABLES, batch_size=3)
    assert dict(many["u1"]) == dict(one["u1"])


def test_events_take_aware_datetimes_and_refuse_naive_ones() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert event("u1", "i1", "click", ts=at).ts == NOW
    with pytest.raises(ConfigurationError, match="has no time zone"):
        event("u1", "i1", "click", ts=datetime(2026, 1, 1))


def test_a_missing_table_is_named() -> None:
    with pytest.raises(ConfigurationError, match=r"the signals look up items: pass its records"):
        run_signals([saves], [event("u1", "i1", "save", ts=NOW)])


def test_assert_signal_passes_on_the_expected_value() -> None:
    assert_signal(
        interests,
        [event("u1", "i1", "save", ts=NOW), event("u1", "i2", "click", ts=NOW)],
        [{"key": "cats", "score": 4.0}, {"key": "dogs", "score": 1.0}],
        tables=TABLES,
    )


def test_assert_signal_shows_expected_and_got() -> None:
    with pytest.raises(AssertionError) as info:
        assert_signal(clicks, [event("u1", "i1", "click", ts=NOW)], {"total": 2, "by": {}})
    assert str(info.value) == (
        "signal 'clicks' for user 'u1':\n"
        '  expected: {"by": {}, "total": 2}\n'
        '  got:      {"by": {"home": 1}, "total": 1}'
    )


def test_assert_signal_needs_the_user_when_there_are_several() -> None:
    events = [event("u1", "i1", "click", ts=NOW), event("u2", "i1", "click", ts=NOW)]
    with pytest.raises(ConfigurationError, match="say which with user_id="):
        assert_signal(clicks, events, {"total": 1, "by": {"home": 1}})
    assert_signal(clicks, events, {"total": 1, "by": {"home": 1}}, user_id="u2")


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: event("u1", "i1", "click", ts=1_767_225_600), "time_out_of_range"),  # seconds
        (lambda: event("u1", "i1", "click", ts=_far_future()), "time_out_of_range"),
        (lambda: event("", "i1", "click", ts=1_767_225_600_000), "invalid_value"),
        (lambda: Event("e1", "u1", "", "click", "home", 1_767_225_600_000), "invalid_value"),
    ],
    ids=["ts in seconds", "400 days ahead", "empty user", "empty item, made directly"],
)
def test_an_event_the_service_would_dead_letter_is_refused(
    make: Callable[[], Event], reason: str
) -> None:
    """Before: the helpers applied events the HTTP and Kafka paths dead-letter, so a test
    could pass for events production never applies."""
    clicks = Signal(name="clicks", version=1, aggregate=Count(by="surface"), retention="28d")
    with pytest.raises(InvalidEventError) as refused:
        run_signals([clicks], [make()])
    assert refused.value.reason == reason


def _far_future() -> int:
    return int(datetime.now(UTC).timestamp() * 1000) + 400 * 86_400_000


# -- the author's loop (found by the signal-author trial) -----------------------------------


def test_event_ids_do_not_depend_on_the_events_made_before() -> None:
    """Equal times are ordered by the CRC of the event id: ids counted across the whole
    process made a test's answer depend on the tests that ran before it (found by the
    signal-author trial, and the review of the first fix)."""
    recent = Signal(name="recent", version=1, aggregate=LastN(5, keep=("item_id",)))
    events = [event("u1", "i1", "click", ts=NOW), event("u1", "i2", "click", ts=NOW)]
    alone = run_signals([recent], events)["u1"]["recent"]
    for _ in range(3):  # another test's events, of the same content too
        event("u1", "i1", "click", ts=NOW)
    again = [event("u1", "i1", "click", ts=NOW), event("u1", "i2", "click", ts=NOW)]
    assert run_signals([recent], again)["u1"]["recent"] == alone
    # Two events of equal content are two events; a long id stays within the limit.
    twice = [event("u1", "i1", "click", ts=NOW)] * 2
    assert run_signals([clicks], twice)["u1"]["clicks"]["total"] == 2
    assert len(event("u1", "i" * 250, "click", ts=NOW).event_id) < 64


def test_shadow_versions_are_answered_under_their_name_at_version() -> None:
    v2 = Signal(name="clicks", version=2, where=action.eq("click"), aggregate=Count(),
                shadow=True)  # fmt: skip
    events = [event("u1", "i1", "click", ts=NOW)]
    answers = run_signals([clicks, v2], events)
    assert answers["u1"]["clicks"] == {"total": 1, "by": {"home": 1}}
    assert answers["u1"]["clicks@2"] == {"total": 1, "by": {"click": 1}}
    assert run_signals([v2], events)["u1"]["clicks@2"] == {"total": 1, "by": {"click": 1}}
    assert_signal(v2, events, {"total": 1, "by": {"click": 1}})


def test_answers_are_the_values_as_served_in_json() -> None:
    """A user-defined read answering ``{7: total}`` is served as ``{"7": total}``, and a
    value JSON cannot carry fails the test, as it fails the API."""
    from test_signal_failures import Dwell, DwellRuntime

    class ByKey(DwellRuntime):
        def read(self, state: Any, context: Any) -> Any:
            from usersignals.aggregations import ReadOut

            return ReadOut({7: state[0], "odd": self.odd}, state[1])

        odd: Any = 1

    class KeyedDwell(Dwell):
        def compile(self, resolve: Any, retention_ms: int) -> ByKey:
            return ByKey(resolve("attrs.dwell_ms"), self.fail)

    signal = Signal(name="dwell", version=1, aggregate=KeyedDwell("none"))
    events = [event("u1", "i1", "click", ts=NOW, attrs={"dwell_ms": 5})]
    assert run_signals([signal], events)["u1"]["dwell"] == {"7": 5, "odd": 1}
    ByKey.odd = object()  # what a numpy scalar is to the API's encoder
    with pytest.raises(TypeError, match="cannot serve"):
        run_signals([signal], events)["u1"]["dwell"]


def test_a_user_without_events_is_answered_as_the_api_answers() -> None:
    assert_signal(clicks, [event("u1", "i1", "click", ts=NOW)], {"total": 0, "by": {}},
                  user_id="u2")  # fmt: skip


def test_a_time_that_is_not_whole_milliseconds_is_refused_by_name() -> None:
    with pytest.raises(ConfigurationError, match="ts"):
        event("u1", "i1", "click", ts=1.5e12)  # type: ignore[arg-type]


def test_a_table_that_is_not_records_by_key_is_refused_by_name() -> None:
    with pytest.raises(ConfigurationError, match="items"):
        run_signals([saves], [event("u1", "i1", "save", ts=NOW)],
                    tables={"items": [{"item_id": "i1"}]})  # type: ignore[dict-item]  # fmt: skip


@pytest.mark.parametrize("size", [0, -1, True])
def test_a_batch_size_that_is_not_a_positive_count_is_refused_by_name(size: int) -> None:
    """Found in a newcomer's trial: ``batch_size=-1`` made no micro-batch at all, and every
    user was answered as having no events (``{"total": 0}``): a test of an empty answer
    passed on events never applied; ``0`` meant one batch."""
    events = [event("u1", "i1", "click", ts=NOW)]
    with pytest.raises(ConfigurationError, match=r"batch_size"):
        run_signals([clicks], events, batch_size=size)


def test_the_context_takes_the_values_the_client_and_the_batch_api_take() -> None:
    """Found in a newcomer's trial: ``context={"limit": 1}`` (as the README's client call
    and a batch request's JSON write it) ended in ``AttributeError: 'int' object has no
    attribute 'strip'`` from deep in the parser, outside the error tree."""
    events = [
        event("u1", "i1", "click", ts=NOW - 60_000, surface="search"),
        event("u1", "i2", "click", ts=NOW),
        event("u1", "i2", "save", ts=NOW - 1),
    ]
    context = {"limit": 1, "dedupe": True, "surfaces": ["home"], "window": "1h"}
    answers = run_signals([clicks, saves], events, tables=TABLES, context=context)
    assert answers["u1"]["clicks"] == {"total": 1, "by": {"home": 1}}
    assert [entry["item_id"] for entry in answers["u1"]["saves"]] == ["i2"]
    assert_signal(clicks, events, {"total": 1, "by": {"home": 1}}, context={"limit": 1,
                  "surfaces": ["home"]})  # fmt: skip


def test_the_context_takes_a_tuple_or_a_set_and_leaves_none_out_as_the_client_does() -> None:
    """From a review: ``{"surfaces": ("home",)}`` filtered on ``"('home'"`` and ``")"`` (the
    tuple's text, split at its comma), an empty answer, and ``{"limit": None}`` was refused,
    where the client leaves it out."""
    events = [
        event("u1", "i1", "click", ts=NOW - 60_000, surface="search"),
        event("u1", "i2", "click", ts=NOW),
    ]
    for surfaces in (("home",), {"home"}, frozenset({"home"}), ["home"]):
        context = {"surfaces": surfaces, "limit": None}
        answers = run_signals([clicks], events, tables=TABLES, context=context)  # type: ignore[arg-type]
        assert answers["u1"]["clicks"] == {"total": 1, "by": {"home": 1}}, surfaces


def test_users_and_read_users_are_not_given_together() -> None:
    """``read_users`` reads only those users; with ``users`` beside it, ``users`` was
    silently ignored (found in review)."""
    from usersignals.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="not both"):
        run_signals([clicks], [], users=["u1"], read_users=["u2"])
