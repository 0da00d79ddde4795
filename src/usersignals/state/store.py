"""The state store interface: bytes in, bytes out, in batches.

The engine reads every user of a micro-batch with one ``get_many`` and writes every changed
user with one atomic ``write``; the store knows nothing of signals. A backend also offers named
*tables* (for enrichment data), for readers in other processes ``refresh`` to catch up
with what the writer has committed, and for the admin commands that change the store's
metadata (``signals apply``, ``signals cutover``, a backfill's record) a lock held from their
read to their write.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import ClassVar, Protocol, runtime_checkable

from usersignals.errors import StoreError

#: How long a hold of a shared store's metadata lock lasts at most (a Redis key's expiry): a
#: command that died holding it (killed, its host gone) keeps the others waiting this long.
METADATA_LOCK_EXPIRY_S = 60.0
#: How long a command waits for the lock before it fails, changing nothing: longer than a
#: dead holder's hold, so only other commands taking it again and again for this long make
#: it fail. A metadata change holds it for a few reads and a write.
METADATA_LOCK_WAIT_S = 90.0


@runtime_checkable
class KeyValueTable(Protocol):
    """A named bytes-to-bytes table (user states, or an enrichment table)."""

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """Values for ``keys``, in order; ``None`` where a key is absent."""

    def write(self, puts: Mapping[bytes, bytes], deletes: Sequence[bytes] = ()) -> None:
        """Apply all ``puts`` and ``deletes`` atomically: all of them or none."""

    def scan(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Every entry whose key starts with ``prefix``, in key order."""


@runtime_checkable
class StateStore(KeyValueTable, Protocol):
    """Where per-user states live. The engine is its only writer of user states."""

    backend: str

    def table(self, name: str) -> KeyValueTable:
        """A named side table in the same store (created when first written)."""

    def refresh(self) -> None:
        """For a reader: make the writer's latest committed writes visible."""

    def metadata_lock(self) -> AbstractContextManager[object]:
        """Held while a command reads the store's metadata (the version lifecycle's records,
        ``state/versions.py``), changes it and writes it back: by one holder at a time among
        all the processes and threads that share the store, so that no command's change is
        overwritten by another's written from an older read."""

    def close(self) -> None: ...


def lock_wait_failed(backend: str, lock: str) -> StoreError:
    """The error of a command that waited :data:`METADATA_LOCK_WAIT_S` for the lock."""
    return StoreError(
        backend,
        "lock",
        f"other commands have held the store's metadata lock ({lock}) for over "
        f"{METADATA_LOCK_WAIT_S:g} s (a command that died holding it holds it "
        f"{METADATA_LOCK_EXPIRY_S:g} s at most): try again",
    )


class ThreadMetadataLock:
    """``metadata_lock`` of a store that one process writes (RocksDB's lock file keeps out
    every other writer process; a dict lives in its process): a lock among this process's
    threads, waited for as long as a shared store's. One for all such stores: metadata
    changes are rare and short."""

    backend: str
    _metadata_lock: ClassVar[threading.Lock] = threading.Lock()

    @contextlib.contextmanager
    def metadata_lock(self) -> Iterator[None]:
        if not self._metadata_lock.acquire(timeout=METADATA_LOCK_WAIT_S):
            raise lock_wait_failed(self.backend, "a lock of this process")
        try:
            yield
        finally:
            self._metadata_lock.release()
