"""Reading ahead: the next micro-batch's user records, read on the fetch thread while the
main thread applies and writes the current one.

Why: in a processor keeping up with the stream (the freshness runs of bench/ingest.py), the
users' multi-get was 22 % of the main thread's samples (py-spy, 60,000 events/s, batches of
15,000-20,000): time in which nothing else of the batch can go on. The fetch thread has room:
it only assembles and decodes.

What keeps it right: while this processor holds a partition, its engine is the only writer
of the partition's users (deletions come in stream order through the same engine), so after
each of its writes the store holds what it wrote. Every write that succeeded hands its
records (and deletions, as absent) to every read-ahead still open, which serves them in place
of what it read: a read that began before the write may have seen the record either way. A
write that failed (or may have written part: a Redis Cluster) marks its keys stale instead;
a stale key, or one not read ahead, is read when the batch is applied, as without a
read-ahead. Why the written records: in a processor keeping up, the users of a batch are
mostly those of the batch before, written while the read-ahead ran; re-read on the main
thread they were 3 % of its samples (py-spy, 60,000 events/s). Once this processor may not
hold its users (a revocation, a lost assignment: another processor may write them before a
block in hand is written), every open read-ahead is dropped
(:meth:`RecordReadAhead.drop_all`), and so is a block's after a failed write attempt.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence

from usersignals.enrich.materializer import LookupsAhead
from usersignals.errors import StoreError
from usersignals.events.model import Event
from usersignals.state.keys import user_key
from usersignals.state.store import StateStore

logger = logging.getLogger(__name__)

#: How the engine reads a batch's user records: keys in, records (or ``None``) out.
ReadRecords = Callable[[Sequence[bytes]], list[bytes | None]]


class ReadAhead:
    """One block's user records as read ahead, and what was written since the read began."""

    def __init__(self, keys: Iterable[bytes] = ()) -> None:
        #: The block's users' keys: only their records are kept of a write.
        self.keys = frozenset(keys)
        self.values: dict[bytes, bytes | None] = {}
        #: The records this engine wrote since (``None``: deleted); they win over ``values``.
        self.written: dict[bytes, bytes | None] = {}
        #: Keys a failed write touched since: read when the block is applied.
        self.stale: set[bytes] = set()
        #: Dropped: every record is read when the block is applied.
        self.dropped = False
        #: The block's lookup keys fetched ahead (``Engine.read_block_ahead``), if any:
        #: records of a source, not of the users, so a revocation leaves them.
        self.lookups: LookupsAhead | None = None


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
        # In key order, as the core's own reads of them (session.rs, `read_in_key_order`):
        # a call's keys then share the store's cache lines.
        keys = sorted(user_key(user) for user in {event.user_id: None for event in events})
        ahead = ReadAhead(keys)
        with self._lock:  # open before the read: a write during it reaches the block
            self._open.append(ahead)
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

    def written(self, puts: Mapping[bytes, bytes], deletes: Sequence[bytes] = ()) -> None:
        """After each write of the engine that succeeded: what it wrote is what the store
        holds, in every read-ahead still open."""
        with self._lock:
            for ahead in self._open:
                for key in ahead.keys.intersection(puts):
                    ahead.written[key] = puts[key]
                for key in ahead.keys.intersection(deletes):
                    ahead.written[key] = None
                ahead.stale.difference_update(ahead.written)

    def failed(self, keys: Iterable[bytes]) -> None:
        """After a write of the engine that failed: it may have written some of ``keys``, so
        they are stale in every read-ahead still open."""
        with self._lock:
            if self._open:
                failed = set(keys)
                for ahead in self._open:
                    ahead.stale |= failed
                    for key in failed:
                        ahead.written.pop(key, None)

    def get_many(self, keys: Sequence[bytes], ahead: ReadAhead | None) -> list[bytes | None]:
        """``keys``' records: from ``ahead`` where it holds a record not written since, from
        the store for the others."""
        if ahead is None:
            return self._store.get_many(keys)
        with self._lock:
            dropped, stale, written = ahead.dropped, set(ahead.stale), dict(ahead.written)
        if dropped or not (ahead.values or written):
            return self._store.get_many(keys)
        values, missing = ahead.values, []
        out: list[bytes | None] = []
        for key in keys:
            if key in written:
                out.append(written[key])
            elif key in values and key not in stale:
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
