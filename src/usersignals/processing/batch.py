"""Micro-batches in, reports out: the engine's input and output records."""

from __future__ import annotations

from dataclasses import dataclass, field

from usersignals.events.model import BadEvent, Event, Position


@dataclass
class MicroBatch:
    """Decoded events and, index for index, where each came from."""

    events: list[Event]
    positions: list[Position]

    def __len__(self) -> int:
        return len(self.events)


@dataclass
class BatchReport:
    """What one micro-batch did.

    ``duplicates`` were already applied (a replay: offset not above the user's progress);
    ``repeats`` carried an ``event_id`` the user had applied within the dedupe horizon.
    ``rejected``: events a signal's own code failed on (reason ``signal_failed``), for the
    dead-letter destination; the other signals applied them.
    """

    events: int = 0
    duplicates: int = 0
    repeats: int = 0
    users: int = 0
    applied: dict[str, int] = field(default_factory=dict)
    expired: dict[str, int] = field(default_factory=dict)
    missing_enrichment: dict[str, int] = field(default_factory=dict)
    newest_event_ms: int | None = None
    rejected: list[BadEvent] = field(default_factory=list)

    def add(self, other: BatchReport) -> None:
        self.events += other.events
        self.duplicates += other.duplicates
        self.repeats += other.repeats
        self.users += other.users
        for mine, theirs in (
            (self.applied, other.applied),
            (self.expired, other.expired),
            (self.missing_enrichment, other.missing_enrichment),
        ):
            for key, value in theirs.items():
                mine[key] = mine.get(key, 0) + value
        self.rejected.extend(other.rejected)
        if other.newest_event_ms is not None:
            self.newest_event_ms = max(self.newest_event_ms or 0, other.newest_event_ms)
