"""Where a backfill stops and the stream takes over.

With Kafka coordinates the boundary is an offset per partition: a backfill ``--until T``
takes each partition's events up to, not including, the first one whose event time is after
``T``. An offset prefix is what the stream's per-user progress can continue from exactly:
every event left out has a higher offset than every event taken, so the processor applies
it (its offset is above the user's progress) and drops every event taken (at or below it).
Cutting by event time alone would be wrong here: a late event with an earlier time but a
higher offset than a left-out one would be applied twice or not at all.

Without coordinates the boundary is the event time: events at or before ``T`` are taken.
The stream must then start at about ``T``; events it carries again (the overlap) are caught
by the engine's event-id deduplication, not by offsets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from usersignals.events.decode import EventDecoder
from usersignals.events.model import Event, Position
from usersignals.ingest.archive import EventArchive

ARCHIVE_PREFIX = "archive:"


def is_kafka(position: Position) -> bool:
    """Whether a position is a Kafka coordinate (``topic/partition``) rather than a file row."""
    return not position.partition.startswith(ARCHIVE_PREFIX)


@dataclass(frozen=True)
class Boundary:
    until_ms: int | None = None
    #: Per Kafka partition, the first offset the backfill leaves to the stream.
    cuts: dict[str, int] = field(default_factory=dict)

    def includes(self, event: Event, position: Position) -> bool:
        if is_kafka(position):
            cut = self.cuts.get(position.partition)
            return cut is None or position.offset < cut
        return self.until_ms is None or event.ts <= self.until_ms


def find_boundary(archive: EventArchive, decoder: EventDecoder, until_ms: int | None) -> Boundary:
    """One pass over the archive's valid events: each partition's first offset after ``until``."""
    if until_ms is None:
        return Boundary()
    cuts: dict[str, int] = {}
    for block in archive.decoded(decoder, None):
        for event, position in zip(block.events, block.positions, strict=True):
            if event.ts > until_ms and is_kafka(position):
                known = cuts.get(position.partition)
                if known is None or position.offset < known:
                    cuts[position.partition] = position.offset
    return Boundary(until_ms, cuts)
