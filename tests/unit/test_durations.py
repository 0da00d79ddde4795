"""Durations in the DSL: timedelta, "7d"-style strings and days(); a bare number is refused.

Also the tuple-of-names parameters, where one name written as a string means that one name.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from usersignals import (
    Count,
    DecayedScores,
    Distinct,
    LastN,
    Lookup,
    MeanVector,
    Signal,
    SignalDefinitionError,
    Sum,
    days,
    hours,
)
from usersignals.aggregations.tiles import TileLayout
from usersignals.durations import DAY_MS, HOUR_MS, MINUTE_MS, parse_duration, to_duration

items = Lookup("items", key="item_id", provides=("category", "creator_id", "embedding"))


def problems_of(**kwargs: Any) -> tuple[str, ...]:
    definition: dict[str, Any] = {"name": "ok", "version": 1, "aggregate": LastN(10)}
    definition.update(kwargs)
    with pytest.raises(SignalDefinitionError) as info:
        Signal(**definition)
    return info.value.problems


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("90ms", 90),
        ("90s", 90_000),
        ("90m", 90 * MINUTE_MS),
        ("7d", 7 * DAY_MS),
        ("2w", 14 * DAY_MS),
        ("1h30m", HOUR_MS + 30 * MINUTE_MS),
        ("1d 12h", DAY_MS + 12 * HOUR_MS),
    ],
)
def test_duration_strings(text: str, ms: int) -> None:
    assert parse_duration(text) == ms
    assert to_duration(text) == ms


@pytest.mark.parametrize("text", ["", "7", "d", "1.5h", "-1h", "1y", "h1", "30m1h", "1d1d"])
def test_bad_duration_strings_say_how_to_write_one(text: str) -> None:
    with pytest.raises(ValueError, match=r'e\.g\. "90s", "15m", "1h30m", "7d"'):
        parse_duration(text)


@pytest.mark.parametrize(
    "retention",
    [timedelta(days=1), "1d", "24h", days(1), hours(24)],
    ids=["timedelta", "string", "hours-string", "days", "hours"],
)
def test_retention_accepts_every_written_form(retention: object) -> None:
    signal = Signal(name="ok", version=1, aggregate=LastN(10), retention=retention)  # type: ignore[arg-type]
    assert signal.retention_ms == DAY_MS
    assert signal.to_json()["retention"] == "1d"


def test_a_bare_number_is_refused_with_how_to_write_it() -> None:
    (problem,) = problems_of(retention=90)
    assert problem.startswith("retention: 90 is a number without a unit")
    assert problem.endswith('such as "90d", "90h", timedelta(days=90) or days(90)')


def test_retention_bounds_still_apply_to_written_durations() -> None:
    assert problems_of(retention=timedelta(0)) == (
        "retention must be a positive duration of at most 3 years",
    )
    assert problems_of(retention="1100d") == (
        "retention must be a positive duration of at most 3 years",
    )


def test_sub_millisecond_timedelta_is_refused() -> None:
    (problem,) = problems_of(retention=timedelta(microseconds=1500))
    assert "not a whole number of milliseconds" in problem


@pytest.mark.parametrize(
    "aggregate",
    [
        DecayedScores(key="category", half_life=timedelta(days=7)),
        DecayedScores(key="category", half_life="7d"),
        MeanVector(of="embedding", dim=4, half_life="1w"),
    ],
)
def test_half_life_accepts_timedelta_and_strings(aggregate: Any) -> None:
    signal = Signal(
        name="ok", version=1, enrich=[items.fields("category", "embedding")], aggregate=aggregate
    )
    assert signal.to_json()["aggregate"]["half_life"] == "1w"


def test_half_life_bare_number_is_refused() -> None:
    problems = problems_of(
        enrich=[items.fields("category")], aggregate=DecayedScores(key="category", half_life=7)
    )
    assert len(problems) == 1
    assert problems[0].startswith("DecayedScores half_life: 7 is a number without a unit")


def test_distinct_bucket_accepts_strings_and_refuses_bare_numbers() -> None:
    signal = Signal(
        name="ok",
        version=1,
        enrich=[items.fields("creator_id")],
        aggregate=Distinct(of="creator_id", bucket="12h"),
    )
    assert signal.to_json()["aggregate"]["bucket"] == "12h"
    (problem,) = problems_of(
        enrich=[items.fields("creator_id")], aggregate=Distinct(of="creator_id", bucket=12)
    )
    assert problem.startswith("Distinct bucket: 12 is a number without a unit")


def test_tile_tiers_accept_written_durations() -> None:
    layout = TileLayout((("1m", timedelta(hours=2)), (hours(1), "8d"), ("1d", 0)))
    assert layout.tiers == ((MINUTE_MS, 2 * HOUR_MS), (HOUR_MS, 8 * DAY_MS), (DAY_MS, 0))
    assert layout.problems() == []
    (problem,) = TileLayout(((60_000, "2h"), ("1h", 0))).problems()
    assert problem.startswith("tile resolution: 60000 is a number without a unit")


# -- a tuple of field names, written as one name -------------------------------------------


def test_count_by_one_name_as_a_string_means_that_name() -> None:
    signal = Signal(name="ok", version=1, aggregate=Count(by="action"))  # type: ignore[arg-type]
    assert signal.aggregate.to_json()["by"] == ["action"]
    assert Count(by="action") == Count(by=("action",))  # type: ignore[arg-type]


def test_sum_by_and_lastn_keep_and_lookup_provides_take_one_name() -> None:
    assert Sum(by="surface", of="attrs.dwell").by == ("surface",)  # type: ignore[arg-type]
    assert LastN(5, keep="item_id").keep == ("item_id",)  # type: ignore[arg-type]
    assert Lookup("items", key="item_id", provides="category").provides == ("category",)  # type: ignore[arg-type]


def test_names_that_are_not_strings_are_one_problem() -> None:
    problems = problems_of(aggregate=Count(by=("action", 3)))  # type: ignore[arg-type]
    assert len(problems) == 1
    assert problems[0].startswith("Count by must be a field name or a tuple of field names")
