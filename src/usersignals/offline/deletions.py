"""User deletions in an archive, forgotten offline as the stream forgot them.

A topic export holds the ``{"op": "delete", "user_id": ...}`` records the stream applies
(``ingest/spool.py``): the processor wrote the events before one, then dropped the user's
record, and their later events started it again. A backfill applies them the same way, in
place (:func:`usersignals.offline.backfill.forget_user`), and leaves out the events met later
that a deletion met before forgets (an export laid out by event time can hold a user's
earlier offsets in a later file); a training set, which reads each user's whole history at
once, leaves out every event a deletion of their user forgets (:class:`Deletions`).

A local backfill meets the archive once, in its order: an event met *before* a deletion
that comes *after* it in its partition (a higher offset in an earlier file) is forgotten
with the user's record all the same. Exact when each partition is exported in offset order
(a file per partition, or files written in offset order), as Spark's backfill always is
(it sorts each user's events by partition and offset).

"After" is the order the stream delivered them in, as far as the archive tells it
(:mod:`usersignals.offline.arrival`): in the deletion's Kafka partition, a higher offset;
for rows without coordinates, later in the archive (files by their relative name, then row).
A producer keyed by user, as the service's own is, puts a user's deletions on the partition
of their events; an event of theirs on another partition is not ordered against it, and kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from usersignals.events.model import Event, Position
from usersignals.offline.boundary import is_kafka


def forgets(deletion: Position, event: Position) -> bool:
    """Whether a deletion at ``deletion`` forgets its user's event at ``event``."""
    if is_kafka(deletion) or is_kafka(event):
        return deletion.partition == event.partition and event.offset < deletion.offset
    # Archive rows: files in the archive's order (by name), then rows.
    return (event.partition, event.offset) < (deletion.partition, deletion.offset)


class Deletions:
    """The deletion records met, per user, for leaving out the events they forget."""

    def __init__(self) -> None:
        self._by_user: dict[str, list[Position]] = {}

    def add(self, user_id: str, position: Position) -> None:
        self._by_user.setdefault(user_id, []).append(position)

    def update(self, other: Deletions) -> None:
        for user_id, positions in other._by_user.items():
            self._by_user.setdefault(user_id, []).extend(positions)

    def kept(self, events: Sequence[tuple[Event, Position]]) -> list[tuple[Event, Position]]:
        """``events`` less those a deletion of their user forgets, in their order."""
        if not self._by_user:
            return list(events)
        return [pair for pair in events if not self._forgotten(*pair)]

    def kept_columns(
        self, events: list[Event], positions: list[Position]
    ) -> tuple[list[Event], list[Position]]:
        """:meth:`kept` for events and their positions side by side (the lists as they are
        while no deletion was met: a backfill calls it per block)."""
        if not self._by_user:
            return events, positions
        pairs = [pair for pair in zip(events, positions, strict=True) if not self._forgotten(*pair)]
        return [event for event, _ in pairs], [position for _, position in pairs]

    def users(self) -> frozenset[str]:
        """The users with a deletion met."""
        return frozenset(self._by_user)

    def _forgotten(self, event: Event, position: Position) -> bool:
        deletions: Iterable[Position] = self._by_user.get(event.user_id, ())
        return any(forgets(deletion, position) for deletion in deletions)

    def __len__(self) -> int:
        return sum(map(len, self._by_user.values()))
