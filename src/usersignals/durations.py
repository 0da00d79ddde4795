"""Durations: written with a unit, kept in milliseconds.

A signal author writes a duration as a ``datetime.timedelta``, a string such as ``"7d"``,
``"90m"`` or ``"1h30m"``, or with ``days(7)`` / ``hours(2)``. A bare number is refused: in
``retention=90`` nobody can tell whether 90 seconds, minutes or days were meant, and the old
silent reading (90 milliseconds) threw a signal's state away almost at once.

:class:`Duration` is an ``int`` of milliseconds that remembers it was written with a unit, so
``days(1)`` still adds to an epoch time in milliseconds, while ``retention=90`` can be told
apart from ``retention=days(90)`` and refused with a message that says how to write it.
"""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta

SECOND_MS = 1_000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS

_UNITS = {"ms": 1, "s": SECOND_MS, "m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS, "w": WEEK_MS}
# "ms" before "m" so that "90ms" is 90 milliseconds, not 90 minutes and a stray "s".
# ASCII digits only: "\d" also matches other scripts' digits, which int() reads too.
_PART = r"([0-9]+)(ms|s|m|h|d|w)"
_PATTERN = re.compile(rf"^(?:{_PART})+$")
_PARTS = re.compile(_PART)
_FORMS = 'a whole number and a unit (ms, s, m, h, d, w), e.g. "90s", "15m", "1h30m", "7d"'


class Duration(int):
    """Milliseconds written with a unit (``days(7)``, ``"7d"``, ``timedelta(days=7)``).

    Arithmetic gives plain ints (``now - days(1)`` is an epoch time, not a duration), so a
    computed length is written as a ``timedelta`` or a string: ``timedelta(weeks=2)``.
    """

    def __repr__(self) -> str:
        return f"Duration({format_duration(self)!r})"


#: What the DSL accepts wherever it asks for a length of time.
DurationLike = Duration | timedelta | str


def seconds(n: float) -> Duration:
    return Duration(round(n * SECOND_MS))


def minutes(n: float) -> Duration:
    return Duration(round(n * MINUTE_MS))


def hours(n: float) -> Duration:
    return Duration(round(n * HOUR_MS))


def days(n: float) -> Duration:
    return Duration(round(n * DAY_MS))


def parse_duration(text: str) -> int:
    """``"1h30m"`` → 5_400_000. Raises ``ValueError`` with the accepted forms on anything else."""
    compact = text.strip().replace(" ", "")
    if not _PATTERN.match(compact):
        raise ValueError(f"{text!r} is not a duration; use {_FORMS}")
    parts = [(int(n), _UNITS[unit]) for n, unit in _PARTS.findall(compact)]
    # "30m1h" or "1d1d" is a slip more likely than a sum: each unit once, largest first.
    if any(later >= earlier for (_, earlier), (_, later) in itertools.pairwise(parts)):
        raise ValueError(
            f"{text!r} is not a duration: its units go from the largest to the smallest, each "
            f"once; use {_FORMS}"
        )
    return sum(n * unit for n, unit in parts)


def to_duration(value: object) -> Duration:
    """A duration from any accepted form; ``ValueError`` saying how to write it otherwise."""
    if isinstance(value, Duration):
        return value
    if isinstance(value, timedelta):
        micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
        if micros % 1_000:
            raise ValueError(f"{value!r} is not a whole number of milliseconds")
        return Duration(micros // 1_000)
    if isinstance(value, str):
        return Duration(parse_duration(value))
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(
            f"{value!r} is a number without a unit; write a duration such as "
            f'"{value}d", "{value}h", timedelta(days={value}) or days({value})'
        )
    raise ValueError(f"{value!r} is not a duration; use a timedelta or {_FORMS}")


def coerce_duration(value: object) -> object:
    """``value`` as a :class:`Duration` when it is a valid one, else unchanged.

    Definitions normalize in ``__post_init__`` with this and report the unchanged, invalid
    value among their problems, so every problem of a definition is listed at once.
    """
    try:
        return to_duration(value)
    except ValueError:
        return value


def duration_problem(name: str, value: object) -> str | None:
    """Why ``value`` is not a duration, prefixed by the parameter's ``name``; None if it is."""
    try:
        to_duration(value)
    except ValueError as exc:
        return f"{name}: {exc}"
    return None


def format_duration(ms: int) -> str:
    """The shortest exact string for a duration: 604800000 → ``"7d"``."""
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNITS[unit]
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def iso_utc(ms: int, timespec: str = "milliseconds") -> str:
    """An epoch time in milliseconds as ISO 8601 in UTC, as answers and messages show times
    (``timespec="seconds"`` where a person reads it)."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec=timespec)
