"""Reading ahead: the next micro-batch's user records, read on the fetch thread while the
main thread applies and writes the current one.

Why: in a processor keeping up with the stream (the freshness runs of bench/ingest.py), the
users' multi-get was 22 % of the main thread's samples (py-spy, 60,000 events/s, batches of
15,000-20,000): time in which nothing else of the batch can go on. The fetch thread has room:
it only assembles and decodes.

What keeps it right: a record read ahead is used only if no write of the engine touched its
key since the read began. Every write marks its keys stale in every read-ahead still open
(after the write, whether it succeeded or not: a read that began before the mark may have
seen the record either way); a stale key, or one not read ahead, is read when the batch is
applied, as without a read-ahead. While this processor holds a partition, its engine is the
only writer of the partition's users (deletions come in stream order through the same
engine). Once it may not hold them (a revocation, a lost assignment: another processor may
write those users before a block in hand is written), every open read-ahead is dropped
(:meth:`RecordReadAhead.drop_all`), and so is a block's after a failed write attempt.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence

from usersignals.errors import StoreError
from usersignals.events.model import Event
from usersignals.state.keys import user_key
from usersignals.state.store import StateStore

logger = logging.getLogger(__name__)

#: How the engine reads a batch's user records: keys in, records (or ``None``) out.
ReadRecords = Callable[[Sequence[bytes]], list[bytes | None]]


class ReadAhead:
    """One block's user records as read ahead, and the keys written since the read began."""

    def __init__(self) -> None:
        self.values: dict[bytes, bytes | None] = {}
        self.stale: set[bytes] = set()
        #: Dropped: every record is read when the block is applied.
        self.dropped = False


class RecordReadAhead:
    """Reads a block's user records ahead (:meth:`read`, on the fetch thread) and serves the
    engine's reads from them (:meth:`get_many`, on the main thread), less what the engine
    wrote since (:meth:`written`)."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._open: list[ReadAhead] = []

    def read(self, events: Sequence[Event]) -> ReadAhead:
        """The records of ``events``' users, as stored now. A store error leaves them to be
        read when the block is applied (where a store outage is ridden out)."""
        ahead = ReadAhead()
        with self._lock:  # open before the read: a write during it marks its keys stale
            self._open.append(ahead)
        keys = [user_key(user) for user in {event.user_id: None for event in events}]
        try:
            values = self._store.get_many(keys)
        except StoreError as exc:
            logger.debug("reading ahead failed; read when applied: %s", exc)
            return ahead
        except BaseException:
            self.done(ahead)
            raise
        ahead.values = dict(zip(keys, values, strict=True))
        return ahead

    def drop_all(self) -> None:
        """Every open read-ahead dropped: its block's records are read when it is applied.
        For a revocation or a lost assignment, after which another processor may write the
        users of a block still in hand."""
        with self._lock:
            for ahead in self._open:
                ahead.dropped = True

    def written(self, keys: Iterable[bytes]) -> None:
        """After each write of the engine (even a failed one): ``keys`` are stale in every
        read-ahead still open."""
        with self._lock:
            if self._open:
                written = set(keys)
                for ahead in self._open:
                    ahead.stale |= written

    def get_many(self, keys: Sequence[bytes], ahead: ReadAhead | None) -> list[bytes | None]:
        """``keys``' records: from ``ahead`` where it holds a record not written since, from
        the store for the others."""
        if ahead is None:
            return self._store.get_many(keys)
        with self._lock:
            dropped, stale = ahead.dropped, set(ahead.stale)
        if dropped or not ahead.values:
            return self._store.get_many(keys)
        values, missing = ahead.values, []
        out: list[bytes | None] = []
        for key in keys:
            if key in values and key not in stale:
                out.append(values[key])
            else:
                missing.append(len(out))
                out.append(None)
        if missing:
            for index, value in zip(
                missing, self._store.get_many([keys[i] for i in missing]), strict=True
            ):
                out[index] = value
        return out

    def done(self, ahead: ReadAhead | None) -> None:
        """The block is written: its read-ahead is no longer kept up to date."""
        if ahead is None:
            return
        with self._lock:
            self._open = [other for other in self._open if other is not ahead]
