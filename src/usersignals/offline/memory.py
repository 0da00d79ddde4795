"""A state store in process memory, for computations whose states are never served.

Training-set generation and the Spark tasks compute states that live only as long as the
computation; a dict behind the :class:`StateStore` interface lets them run the very Engine
and SignalReader the service runs, with no disk in between.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from usersignals.state.store import ThreadMetadataLock


class _MemoryTable:
    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        data = self._data
        return [data.get(key) for key in keys]

    def write(self, puts: Mapping[bytes, bytes], deletes: Sequence[bytes] = ()) -> None:
        self._data.update(puts)
        for key in deletes:
            self._data.pop(key, None)

    def scan(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        for key in sorted(k for k in self._data if k.startswith(prefix)):
            yield key, self._data[key]

    def __len__(self) -> int:
        return len(self._data)


class MemoryStore(ThreadMetadataLock, _MemoryTable):
    """User records in a dict; side tables in dicts of their own."""

    backend = "memory"

    def __init__(self) -> None:
        super().__init__()
        self._tables: dict[str, _MemoryTable] = {}

    def table(self, name: str) -> _MemoryTable:
        return self._tables.setdefault(name, _MemoryTable())

    def tables(self) -> dict[str, _MemoryTable]:
        """The side tables written or asked for so far, by name."""
        return dict(self._tables)

    def refresh(self) -> None:
        """One process, one dict: every write is visible at once."""

    def close(self) -> None:
        self._data.clear()
        self._tables.clear()
