"""Durations in milliseconds, and their parsing from strings such as ``"90s"`` or ``"7d"``."""

from __future__ import annotations

import re

SECOND_MS = 1_000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS

_UNITS = {"ms": 1, "s": SECOND_MS, "m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS, "w": WEEK_MS}
_PATTERN = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)\s*$")


def seconds(n: float) -> int:
    return int(n * SECOND_MS)


def minutes(n: float) -> int:
    return int(n * MINUTE_MS)


def hours(n: float) -> int:
    return int(n * HOUR_MS)


def days(n: float) -> int:
    return int(n * DAY_MS)


def parse_duration(text: str) -> int:
    """``"1h"`` → 3_600_000. Raises ``ValueError`` with the accepted forms on anything else."""
    match = _PATTERN.match(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration; use a whole number and a unit, e.g. 90s, 15m, 1h, 7d, 2w"
        )
    return int(match.group(1)) * _UNITS[match.group(2)]


def format_duration(ms: int) -> str:
    """The shortest exact string for a duration: 604800000 → ``"7d"``."""
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNITS[unit]
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
