"""Signals whose windowed counts keep a few exact entries: the offline property tests run them
beside the reference signals, so that a few random events reach the cap (tests only)."""

from __future__ import annotations

from usersignals import Count, Signal, TileLayout, days, hours, minutes

action_counts = Signal(
    name="action_counts",
    version=1,
    aggregate=Count(
        by=("action", "surface"),
        tiles=TileLayout(((minutes(5), hours(2)), (hours(1), days(1)), (days(1), 0))),
        exact_entries=3,
    ),
    retention=days(28),
)

actions = Signal(
    name="actions",
    version=1,
    aggregate=Count(by="action", exact_entries=1),
    retention=days(3),
)
