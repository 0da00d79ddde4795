"""ReadContext: parsing request-time parameters, and the time range a context views."""

from __future__ import annotations

import pytest

from usersignals import ContextError, ReadContext, UserSignalsError
from usersignals.aggregations import CONTEXT_PARAMETERS
from usersignals.aggregations.context import MAX_LIMIT

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR = 3_600_000
DAY = 24 * HOUR


def parse(**params: str | None) -> ReadContext:
    return ReadContext.parse(params, now_ms=NOW)


def parse_error(**params: str | None) -> ContextError:
    with pytest.raises(ContextError) as info:
        parse(**params)
    return info.value


# -- good values ------------------------------------------------------------------------------


def test_no_parameters_is_the_default_view() -> None:
    context = parse()
    assert context == ReadContext(now_ms=NOW)
    assert context.given() == set()


def test_every_parameter_at_once() -> None:
    context = parse(
        window="7d",
        actions="save, click",
        surfaces="home",
        since="1767000000000",
        until="2026-01-01T00:00:00Z",
        limit="25",
        dedupe="true",
        exclude="i1,i2",
        as_of="2026-01-01T01:00:00+01:00",
    )
    assert context == ReadContext(
        window_ms=7 * DAY,
        actions=frozenset({"save", "click"}),
        surfaces=frozenset({"home"}),
        since_ms=1_767_000_000_000,
        until_ms=NOW,
        limit=25,
        dedupe=True,
        exclude=frozenset({"i1", "i2"}),
        as_of_ms=NOW,
        now_ms=NOW,
    )
    assert context.given() == set(CONTEXT_PARAMETERS)


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("1ms", 1),
        ("90s", 90_000),
        ("15m", 900_000),
        ("1h", HOUR),
        ("7d", 7 * DAY),
        ("2w", 14 * DAY),
        (" 3 h ", 3 * HOUR),
    ],
)
def test_window(text: str, ms: int) -> None:
    assert parse(window=text).window_ms == ms


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("1767225600000", NOW),
        ("2026-01-01T00:00:00Z", NOW),
        ("2026-01-01T00:00:00+00:00", NOW),
        ("2026-01-01T02:00:00+02:00", NOW),
        ("2025-12-31T19:00:00-05:00", NOW),
        ("2026-01-01T00:00:00.250Z", NOW + 250),
    ],
)
def test_times(text: str, ms: int) -> None:
    context = parse(since=text, until=text, as_of=text)
    assert (context.since_ms, context.until_ms, context.as_of_ms) == (ms, ms, ms)


@pytest.mark.parametrize("text", ["1", "10000", " 42 "])
def test_limit(text: str) -> None:
    assert parse(limit=text).limit == int(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("on", True),
        ("false", False),
        ("0", False),
        ("no", False),
        ("Off", False),
    ],
)
def test_dedupe(text: str, value: bool) -> None:
    assert parse(dedupe=text).dedupe is value


def test_lists_are_trimmed_and_deduplicated() -> None:
    context = parse(actions=" save ,click,,save,", surfaces="home", exclude="i1, i1 ,i2")
    assert context.actions == frozenset({"save", "click"})
    assert context.surfaces == frozenset({"home"})
    assert context.exclude == frozenset({"i1", "i2"})


def test_missing_values_mean_not_given() -> None:
    context = parse(window=None, actions=None, limit=None, dedupe=None, exclude=None)
    assert context == ReadContext(now_ms=NOW)


def test_an_empty_exclusion_list_excludes_nothing() -> None:
    """The Python client sends `exclude=` for `exclude=[]`: a caller whose list is
    sometimes empty means "exclude nothing", not a mistake (found by the review)."""
    assert parse(exclude="").exclude == frozenset()
    assert parse(exclude=" ").given() == set()


@pytest.mark.parametrize("parameter", [p for p in CONTEXT_PARAMETERS if p != "exclude"])
def test_an_empty_value_is_refused_not_read_as_not_given(parameter: str) -> None:
    # `actions=` (or a JSON `[]`) read as "every action" answered what was not asked.
    error = parse_error(**{parameter: ""})
    assert error.parameter == parameter
    assert "empty" in str(error)


def test_since_equal_to_until_is_allowed() -> None:
    context = parse(since=str(NOW), until=str(NOW))
    assert (context.since_ms, context.until_ms) == (NOW, NOW)


def test_parse_without_now_uses_the_wall_clock() -> None:
    import time

    before = time.time_ns() // 1_000_000
    context = ReadContext.parse({})
    after = time.time_ns() // 1_000_000
    assert before <= context.now_ms <= after


# -- bad values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parameter", "text", "fragment"),
    [
        ("window", "abc", "is not a duration"),
        ("window", "0s", "positive"),
        ("window", "-1h", "is not a duration"),
        ("window", "1.5h", "is not a duration"),
        ("window", "1y", "is not a duration"),
        ("limit", "0", f"between 1 and {MAX_LIMIT}"),
        ("limit", "x", "not a whole number"),
        ("limit", "100000", f"between 1 and {MAX_LIMIT}"),
        ("limit", "-3", f"between 1 and {MAX_LIMIT}"),
        ("limit", "2.5", "not a whole number"),
        ("since", "2026-01-01T00:00:00", "no time zone"),
        ("until", "2026-01-01", "no time zone"),
        ("as_of", "2026-01-01T10:00:00", "no time zone"),
        ("as_of", "yesterday", "is not a time"),
        ("since", "1h", "is not a time"),
        ("since", "0", "before 2000-01-01"),
        ("until", "1795780000", "ms since the epoch"),  # seconds: 1970-01-21
        ("window", "99999999999999999999d", "at most"),
        ("window", "9223372036854775808ms", "at most"),
        ("dedupe", "maybe", "not a boolean"),
        ("actions", ",", "at least one value"),
        ("surfaces", " , ", "at least one value"),
        ("exclude", ",,", "at least one value"),
        # Digits other than ASCII's, and Python's literal forms: int() reads them, a client
        # that sent them meant something else (found trying the API as a new user).
        ("limit", "\u0663", "not a whole number"),  # ARABIC-INDIC DIGIT THREE
        ("limit", "1_0", "not a whole number"),
        ("limit", "\uff15", "not a whole number"),  # FULLWIDTH DIGIT FIVE
        ("as_of", "\u00b2", "is not a time"),  # SUPERSCRIPT TWO: isdigit() but not int()
        ("as_of", "\u0663" * 13, "is not a time"),
        ("since", "1_767_225_600_000", "is not a time"),
        ("window", "\u0663h", "is not a duration"),
    ],
)
def test_bad_value_names_the_parameter(parameter: str, text: str, fragment: str) -> None:
    error = parse_error(**{parameter: text})
    assert error.parameter == parameter
    assert fragment in str(error)
    assert str(error).startswith(f"{parameter}: ")
    assert isinstance(error, UserSignalsError)


def test_too_many_list_values() -> None:
    error = parse_error(exclude=",".join(f"i{n}" for n in range(1001)))
    assert error.parameter == "exclude"
    assert "at most 1000" in str(error)


def test_since_after_until() -> None:
    error = parse_error(since="2026-01-02T00:00:00Z", until="2026-01-01T00:00:00Z")
    assert error.parameter == "since"
    assert "until" in str(error)


def test_unknown_parameter_is_named_and_the_known_ones_listed() -> None:
    error = parse_error(windw="1h")
    assert error.parameter == "windw"
    for name in CONTEXT_PARAMETERS:
        assert name in str(error)


def test_unknown_parameter_is_reported_before_bad_values() -> None:
    error = parse_error(window="abc", bogus="1")
    assert error.parameter == "bogus"


# -- the viewed time range ------------------------------------------------------------------


def test_default_view_ends_now_and_is_unbounded_before() -> None:
    context = ReadContext(now_ms=NOW)
    assert context.end_ms == NOW
    assert context.start_ms is None
    assert context.reference_ms == NOW


def test_window_ends_now_inclusive_of_both_ends() -> None:
    context = ReadContext(window_ms=HOUR, now_ms=NOW)
    assert context.end_ms == NOW
    # [A - W, A]: both edges are inside the view (issue 10).
    assert context.start_ms == NOW - HOUR


def test_window_ends_at_as_of() -> None:
    as_of = NOW - 5 * DAY
    context = ReadContext(window_ms=DAY, as_of_ms=as_of, now_ms=NOW)
    assert context.end_ms == as_of
    assert context.start_ms == as_of - DAY
    assert context.reference_ms == as_of


def test_as_of_in_the_future_of_now_is_honoured() -> None:
    context = ReadContext(as_of_ms=NOW + HOUR, now_ms=NOW)
    assert context.end_ms == NOW + HOUR
    assert context.reference_ms == NOW + HOUR


def test_since_bounds_the_start() -> None:
    context = ReadContext(since_ms=NOW - 3 * DAY, now_ms=NOW)
    assert context.start_ms == NOW - 3 * DAY
    assert context.end_ms == NOW


def test_since_inside_the_window_narrows_it() -> None:
    context = ReadContext(window_ms=7 * DAY, since_ms=NOW - DAY, now_ms=NOW)
    assert context.start_ms == NOW - DAY


def test_since_before_the_window_does_not_widen_it() -> None:
    context = ReadContext(window_ms=HOUR, since_ms=NOW - DAY, now_ms=NOW)
    assert context.start_ms == NOW - HOUR


def test_until_before_now_bounds_the_end() -> None:
    context = ReadContext(until_ms=NOW - HOUR, now_ms=NOW)
    assert context.end_ms == NOW - HOUR
    assert context.start_ms is None
    # Decay is still evaluated at "now", not at `until`.
    assert context.reference_ms == NOW


def test_until_after_as_of_does_not_extend_the_view() -> None:
    context = ReadContext(until_ms=NOW, as_of_ms=NOW - DAY, now_ms=NOW)
    assert context.end_ms == NOW - DAY


def test_parsed_context_has_the_same_arithmetic() -> None:
    context = parse(window="1h", as_of="2026-01-01T00:00:00Z", since="2025-12-31T23:30:00Z")
    assert context.end_ms == NOW
    assert context.start_ms == NOW - HOUR // 2
    assert context.reference_ms == NOW


def test_given_names_only_set_parameters() -> None:
    context = ReadContext(window_ms=HOUR, limit=5, dedupe=False, exclude=frozenset(), now_ms=NOW)
    assert context.given() == {"window", "limit"}


def test_iso_times_are_exact_to_the_millisecond() -> None:
    context = parse(as_of="2039-07-06T01:24:33.693Z")
    assert context.as_of_ms == 2_193_528_273_693


def test_without_as_of_the_view_time_is_now_or_a_newer_event() -> None:
    context = ReadContext(window_ms=HOUR, now_ms=NOW)
    assert context.view_time(NOW - DAY) == NOW
    # A producer clock ahead of ours: the view is as of the newest event applied.
    assert context.view_time(NOW + 5) == NOW + 5
    assert context.start(NOW + 5) == NOW + 5 - HOUR
    explicit = ReadContext(as_of_ms=NOW - DAY, now_ms=NOW)
    assert explicit.view_time(NOW + 5) == NOW - DAY


def test_consistency_leaves_out_a_logged_context_this_release_refuses() -> None:
    """A feature log written by an older worker may hold `actions=` or a time in seconds,
    which this release refuses: `consistency` counts such requests apart (outdated) rather
    than ending on the first one (found by the review)."""
    from usersignals.offline.consistency import _still_parses

    assert _still_parses({"names": "counts", "window": "1h"})
    assert not _still_parses({"actions": ""})
    assert not _still_parses({"since": "1795780000"})
