"""Why a logged answer differs from its recomputation (offline/consistency.py's ``why``)."""

from __future__ import annotations

import msgspec

from usersignals.offline.consistency import AHEAD, BEHIND, UNEXPLAINED, nearest, why
from usersignals.serving.feature_records import LoggedAnswer

TIMES = [100, 500, 900]


def test_an_answer_behind_ahead_or_neither() -> None:
    assert why(LoggedAnswer("s", 1, 1, 500), 1_000, TIMES) == BEHIND  # 900 not in it yet
    assert why(LoggedAnswer("s", 1, 1, 900), 1_000, TIMES) == UNEXPLAINED
    assert why(LoggedAnswer("s", 1, 1, 1_500), 1_000, TIMES) == AHEAD
    assert why(LoggedAnswer("s", 1, 0, None), 1_000, TIMES) == BEHIND  # it counted none


def test_a_log_written_before_answers_kept_their_newest_event_says_nothing_of_why() -> None:
    """Found by the review: a log written before ``newest_event_ms`` was kept read as
    "counted no event", so every difference of a user with events passed for freshness."""
    old = msgspec.json.decode(b'{"name": "s", "version": 1, "value": 1}', type=LoggedAnswer)
    assert why(old, 1_000, TIMES) == UNEXPLAINED


def test_an_answer_is_compared_with_the_recomputation_it_equals_before_one_it_is_close_to() -> None:
    """Found by the review: a deleted user's answer equal to the recomputation without the
    deletion, and within a sketch's error of the one with it, was compared with the latter
    and counted as a difference."""
    assert nearest(100, [100, 101], 0.05) == 100
    assert nearest(101, [100, 101], 0.05) == 101
    assert nearest(102, [90, 101], 0.05) == 101
    assert nearest(50, [90, 101], 0.05) == 90
