"""An in-memory store: dicts behind the :class:`StateStore` interface, for tests and previews.

It passes the same contract suite as RocksDB and Redis, so a signal tested on it behaves as
it will on a real backend. It lives in one process and is gone when that process ends: no
reader in another process can see it (``refresh`` has nothing to catch up with).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from usersignals.errors import StoreError
from usersignals.state.store import ThreadMetadataLock

_BACKEND = "memory"


class _MemoryTable:
    """One named table: a dict of bytes to bytes."""

    def __init__(self, owner: MemoryStore) -> None:
        self._owner = owner
        self._data: dict[bytes, bytes] = {}

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        self._owner.check_open("read")
        data = self._data
        return [data.get(key) for key in keys]

    def write(self, puts: Mapping[bytes, bytes], deletes: Sequence[bytes] = ()) -> None:
        self._owner.check_open("write")
        # Checked before any change, so a bad write leaves the table as it was (atomicity).
        for key in (*puts, *deletes):
            if not isinstance(key, bytes):
                raise StoreError(_BACKEND, "write", f"keys must be bytes, not {key!r}")
        for value in puts.values():
            if not isinstance(value, bytes):
                raise StoreError(_BACKEND, "write", f"values must be bytes, not {value!r}")
        self._data.update(puts)
        for key in deletes:
            self._data.pop(key, None)

    def scan(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        self._owner.check_open("scan")
        # A sorted snapshot: a write during the scan neither breaks nor shows in it.
        for key in sorted(key for key in self._data if key.startswith(prefix)):
            yield key, self._data[key]


class MemoryStore(ThreadMetadataLock, _MemoryTable):
    """User states in the default table; enrichment tables by name beside them."""

    backend = _BACKEND

    def __init__(self) -> None:
        super().__init__(self)
        self._tables: dict[str, _MemoryTable] = {}
        self._closed = False

    def table(self, name: str) -> _MemoryTable:
        self.check_open("open table")
        if name not in self._tables:
            self._tables[name] = _MemoryTable(self)
        return self._tables[name]

    def refresh(self) -> None:
        """Nothing to catch up with: every write is visible at once."""

    def close(self) -> None:
        self._closed = True

    def check_open(self, operation: str) -> None:
        if self._closed:
            raise StoreError(_BACKEND, operation, "the store is closed")
