"""A backfill shard's private store: in memory while its records are small, RocksDB beyond.

A shard computes its users' records into a store of its own and reads them back once, in key
order, to write the table file the deployment's store takes in. Most shards' records fit in
memory many times over (200,000 reference events make about 100,000 records, 30 MB), and a
RocksDB store cost them a write into its memtable, a scan back out and a flush on close for
nothing: about 0.17 s of a 2.5 s shard of 200,000 events (timed per phase). So the records
stay in a dict until they pass :data:`MEMORY_BUDGET_BYTES`, and only then move to a RocksDB
store on the shard's scratch directory (no WAL: the job computes a lost shard again), where
every later write goes too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from usersignals.offline.memory import MemoryStore
from usersignals.state.rocks import RocksStore
from usersignals.state.store import KeyValueTable, ThreadMetadataLock

#: The records' bytes (keys and values, as last written) held in memory at most.
MEMORY_BUDGET_BYTES = 256 << 20


class ScratchStore(ThreadMetadataLock):
    """The :class:`~usersignals.state.store.StateStore` of one shard's computed records."""

    backend = "scratch"

    def __init__(self, directory: Path, budget_bytes: int = MEMORY_BUDGET_BYTES) -> None:
        self.directory = directory
        self.budget_bytes = budget_bytes
        self._backing: MemoryStore | RocksStore = MemoryStore()
        self._held = 0  # the bytes written while in memory

    @property
    def on_disk(self) -> bool:
        """Whether the records have moved to RocksDB (over the budget, or :meth:`persist`)."""
        return isinstance(self._backing, RocksStore)

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return self._backing.get_many(keys)

    def write(self, puts: Mapping[bytes, bytes], deletes: Sequence[bytes] = ()) -> None:
        self._count(puts)
        self._backing.write(puts, deletes)

    def scan(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        return self._backing.scan(prefix)

    def table(self, name: str) -> KeyValueTable:
        # The engine takes its side tables (keep_raw_events) when it is built: the view
        # finds the table wherever the records are at each call.
        return _SideTable(self, name)

    def refresh(self) -> None:
        """One writer, in this process: every write is visible at once."""

    def persist(self) -> None:
        """Move everything to RocksDB on the scratch directory, where a store opened there
        (by another process) finds it once this one is closed."""
        memory = self._backing
        if not isinstance(memory, MemoryStore):
            return
        rocks = RocksStore(self.directory, scratch=True)
        try:
            rocks.write(dict(memory.scan()))
            for name, table in memory.tables().items():
                rocks.table(name).write(dict(table.scan()))
        except BaseException:
            rocks.close()
            raise
        self._backing = rocks
        memory.close()

    def close(self) -> None:
        self._backing.close()

    def _count(self, puts: Mapping[bytes, bytes]) -> None:
        """Account for a write while in memory; over the budget, move to disk first."""
        if isinstance(self._backing, MemoryStore):
            # An upper bound: a key written again counts twice. It only moves the records
            # to disk a little early.
            self._held += sum(len(key) + len(value) for key, value in puts.items())
            if self._held > self.budget_bytes:
                self.persist()

    def _table_write(
        self, name: str, puts: Mapping[bytes, bytes], deletes: Sequence[bytes]
    ) -> None:
        self._count(puts)
        self._backing.table(name).write(puts, deletes)

    def _table(self, name: str) -> KeyValueTable:
        return self._backing.table(name)


class _SideTable:
    """A named table of a :class:`ScratchStore`, wherever its records are now."""

    def __init__(self, store: ScratchStore, name: str) -> None:
        self._store = store
        self._name = name

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return self._store._table(self._name).get_many(keys)

    def write(self, puts: Mapping[bytes, bytes], deletes: Sequence[bytes] = ()) -> None:
        self._store._table_write(self._name, puts, deletes)

    def scan(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        return self._store._table(self._name).scan(prefix)
