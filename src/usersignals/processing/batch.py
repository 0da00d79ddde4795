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


#: The key of the native core's batch call in :attr:`BatchReport.signal_seconds`, and its name
#: for people.
NATIVE_TIMING_KEY = "native"
NATIVE_TIMING = "native core"


@dataclass
class BatchReport:
    """What one micro-batch did.

    ``duplicates`` were already applied (a replay: offset not above the user's progress);
    ``repeats`` carried an ``event_id`` the user had applied within the dedupe horizon.
    ``rewound`` were at or below the user's progress, yet their id was never met (it is not
    among the ones the record keeps): the partition's offsets went backwards, and they were
    taken as new events.
    ``rejected``: events a signal's own code failed on (reason ``signal_failed``), for the
    dead-letter destination; the other signals applied them.
    ``large_records``: user records written larger than ``processing.large_record_bytes``,
    and ``largest_record`` the largest of them (user id, bytes): see
    processing/large_records.py.
    """

    events: int = 0
    duplicates: int = 0
    repeats: int = 0
    rewound: int = 0
    users: int = 0
    applied: dict[str, int] = field(default_factory=dict)
    expired: dict[str, int] = field(default_factory=dict)
    missing_enrichment: dict[str, int] = field(default_factory=dict)
    newest_event_ms: int | None = None
    rejected: list[BadEvent] = field(default_factory=list)
    large_records: int = 0
    largest_record: tuple[str, int] | None = None
    #: Seconds spent in each signal's own code (decoding, applying and encoding its
    #: states), by key for the signals that run in Python, the native core's batch call for
    #: all the others under ``native``: where a slow user-defined aggregation shows. A
    #: measurement, not an outcome: reports compare equal without it.
    signal_seconds: dict[str, float] = field(default_factory=dict, compare=False)

    def add(self, other: BatchReport) -> None:
        self.events += other.events
        self.duplicates += other.duplicates
        self.repeats += other.repeats
        self.rewound += other.rewound
        self.users += other.users
        for mine, theirs in (
            (self.applied, other.applied),
            (self.expired, other.expired),
            (self.missing_enrichment, other.missing_enrichment),
        ):
            for key, value in theirs.items():
                mine[key] = mine.get(key, 0) + value
        self.rejected.extend(other.rejected)
        self.large_records += other.large_records
        if other.largest_record and other.largest_record[1] > (self.largest_record or ("", 0))[1]:
            self.largest_record = other.largest_record
        for key, seconds in other.signal_seconds.items():
            self.signal_seconds[key] = self.signal_seconds.get(key, 0.0) + seconds
        if other.newest_event_ms is not None:
            self.newest_event_ms = max(self.newest_event_ms or 0, other.newest_event_ms)

    def time_in_signals(self) -> str:
        """:attr:`signal_seconds` for people, the slowest first ("" when none ran)."""
        ranked = sorted(self.signal_seconds.items(), key=lambda item: -item[1])
        return ", ".join(
            f"{NATIVE_TIMING if key == NATIVE_TIMING_KEY else key} {seconds:.2f} s"
            for key, seconds in ranked
        )
