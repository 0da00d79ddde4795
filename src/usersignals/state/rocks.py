"""The embedded default backend: RocksDB through rocksdict.

One writer process opens the store read-write; readers in other processes (serving workers)
open it as RocksDB *secondary* instances and call ``refresh`` to catch up with the writer's
WAL and flushed files — that is how new state becomes visible to them within milliseconds.

Durability: every write is one atomic WriteBatch through the WAL. ``sync=False`` (default)
survives a crash of the process, which is what offset commits need; ``sync=True`` also
survives a crash of the machine, at a cost per write. A *scratch* store (a backfill shard's
states, computed to be merged, in a directory deleted afterwards) skips the WAL: a crash
loses what it held, which its job computes again; closing it writes everything out.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import cast

from rocksdict import (
    AccessType,
    BlockBasedOptions,
    DBCompressionType,
    IngestExternalFileOptions,
    Options,
    Rdict,
    SstFileWriter,
    WriteBatch,
    WriteOptions,
)

from usersignals.errors import StoreError
from usersignals.state.keys import table_column
from usersignals.state.store import ThreadMetadataLock
from usersignals.uninterrupted import temporary_directory

logger = logging.getLogger(__name__)

_BACKEND = "rocksdb"


#: Bits per key of each table file's Bloom filter: RocksDB's usual 10 (about 1 % false
#: positives). A batch reads its users' records by key, and a user new to the store (or a
#: record in a newer file) no longer costs a block read in every file that cannot hold it.
BLOOM_BITS_PER_KEY = 10
#: The memtable's Bloom filter, as a share of its write buffer (64 MB: 6.4 MB of bits).
MEMTABLE_BLOOM_RATIO = 0.1
#: Levels stored uncompressed, from L0: the newest files, rewritten soon by compaction and
#: read the most; the deeper levels, which hold most of a large store, keep snappy.
UNCOMPRESSED_LEVELS = 2
_LEVELS = 7  # RocksDB's default num_levels


def _options() -> Options:
    """The store's options. Beside RocksDB's defaults, Bloom filters and no compression on
    the newest levels: the engine's CPU time for 1 M reference events went from 15.2-16.0 s
    to 14.5-15.1 s (bench/engine.py, three runs each, interleaved), and its instructions
    for 300,000 events down 2.2 % (callgrind), for a store 8 % larger at 1 M events. (Each
    alone was measured and dropped before: Bloom filters made no difference, and no
    compression at any level made the store a third larger.)"""
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.create_missing_column_families(True)
    options.set_max_background_jobs(2)
    # A Bloom filter on the memtable's whole keys (a tenth of its size): a multi-get's key
    # that the memtable does not hold (a user new to it, most of a batch's) skips the skip
    # list's search. The engine's memtable searches 183 → 125 M instructions, the engine
    # 1,746.6 → 1,704.4 M (bench/engine.py at 50,000 events in batches of 10,000, callgrind;
    # dropped once before on wall clock, where it made no difference to see).
    options.set_memtable_prefix_bloom_ratio(MEMTABLE_BLOOM_RATIO)
    options.set_memtable_whole_key_filtering(True)
    tables = BlockBasedOptions()
    tables.set_bloom_filter(BLOOM_BITS_PER_KEY, False)  # a full filter per file
    options.set_block_based_table_factory(tables)
    plain, snappy = DBCompressionType.none(), DBCompressionType.snappy()
    options.set_compression_per_level(
        [plain] * UNCOMPRESSED_LEVELS + [snappy] * (_LEVELS - UNCOMPRESSED_LEVELS)
    )
    return options


def _reader_options() -> Options:
    """A serving worker's secondary: table files opened on the catching-up thread itself.

    Why: each ``try_catch_up_with_primary`` runs the table-loading step, which by default
    starts and joins 16 threads (``max_file_opening_threads``) even when no file is new —
    1.4-6 ms a call on a 2-core machine, measured with bench/catch_up.py, and rocksdict holds
    the GIL through it, so the worker's event loop stood still that long every refresh.
    With one thread the same call takes about 0.02 ms when nothing changed.
    """
    options = _options()
    options.set_max_file_opening_threads(1)
    return options


#: Keys per RocksDB multi-get: a batch's reads (tens of thousands of user keys) go in calls
#: of this many. RocksDB sorts each call's keys (rocksdict does not say they are sorted), and
#: a call's per-key contexts are one allocation, which for 37,000 keys is past glibc's mmap
#: threshold (``malloc_tuning``): mapped and faulted in again by every batch. At 256,
#: ``bench/engine.py --events 200000`` (batches of 100,000; callgrind) spends 741 M
#: instructions in the multi-gets instead of 850 M (4,096: 795 M; 1,024: 766 M), and a
#: 1 M-event run takes about 12 % fewer page faults. The calls share no snapshot, which no
#: reader needs: the store promises none, and the engine reading a batch's users is their
#: only writer.
MULTI_GET_KEYS = 256


class _RocksTable:
    """One column family of the database as a :class:`KeyValueTable`."""

    def __init__(self, db: Rdict, name: str, write_options: WriteOptions) -> None:
        self._db = db
        self._name = name
        # Reads go through the family's own view; writes through the database, so that one
        # WriteBatch could span families.
        self._view: Rdict = db if name == "default" else db.get_column_family(name)
        self._write_options = write_options

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        if not keys:
            return []
        try:
            if len(keys) == 1:
                # One key (a GET request): a point get costs half a multi-get (6 vs 12 us
                # measured), and it keeps the GIL, which a multi-get lets go of mid-request.
                value: bytes | None = self._view.get(keys[0])  # no `cast`: a call per get
                return [value]
            values: list[bytes | None] = []
            for start in range(0, len(keys), MULTI_GET_KEYS):
                chunk = self._view[list(keys[start : start + MULTI_GET_KEYS])]
                values += cast(list[bytes | None], chunk)
        except Exception as exc:
            raise StoreError(_BACKEND, "read", str(exc)) from exc
        return values

    def get(self, key: bytes) -> bytes | None:
        return self.get_many([key])[0]

    def write(self, puts: Mapping[bytes, bytes], deletes: Sequence[bytes] = ()) -> None:
        batch = WriteBatch(raw_mode=True)
        handle = self._db.get_column_family_handle(self._name)
        batch.set_default_column_family(handle)
        # In key order: RocksDB's memtable (a skip list) inserts a run of ascending keys
        # faster than the same keys at random (30 batches of 10,000 records: 1.35-1.41 s
        # against 1.18 s, the sort included; bench/engine.py at 1 M events, two alternating
        # pairs: 65,069-65,900 → 66,900-66,967 events/s). Reads stay in the caller's order:
        # a multi-get of sorted keys made the engine 3-5 % slower (its sort and unsort). The
        # engine's native batches come in key order already, which the sort passes in one run.
        for key in sorted(puts):
            batch.put(key, puts[key])
        for key in deletes:
            batch.delete(key)
        try:
            self._db.write(batch, self._write_options)
        except Exception as exc:
            raise StoreError(_BACKEND, "write", str(exc)) from exc

    def close_view(self) -> None:
        if self._view is not self._db:
            self._view.close()

    def scan(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        iterator = self._view.iter()
        iterator.seek(prefix)
        while iterator.valid():
            key: bytes = iterator.key()
            if not key.startswith(prefix):
                break
            yield key, iterator.value()
            iterator.next()


def write_sorted_file(path: Path, records: Iterable[tuple[bytes, bytes]]) -> int:
    """Write ``records`` (keys strictly ascending) as a RocksDB table file for
    :meth:`RocksStore.ingest`; returns how many. No file is written for none (RocksDB makes
    no empty table file).

    Why a file: a backfill shard's records went into the store through the WAL and the
    write buffers, 7.4 µs a 1.5 KB record, all in the one process that holds the store; a
    shard writes its own file at 1.9 µs a record, in parallel, and the ingestion is a hard
    link (measured, 110,000 records: 4 ms; a file on another file system is copied)."""
    count = 0
    writer: SstFileWriter | None = None
    for key, value in records:  # the records' own errors pass as they are
        try:
            if writer is None:
                writer = SstFileWriter(options=_options())
                writer.open(str(path))
            writer[key] = value
        except Exception as exc:
            raise StoreError(_BACKEND, "write file", f"{path}: {exc}") from exc
        count += 1
    if writer is not None:
        try:
            writer.finish()
        except Exception as exc:
            raise StoreError(_BACKEND, "write file", f"{path}: {exc}") from exc
    return count


class RocksStore(ThreadMetadataLock, _RocksTable):
    """User states in the default column family; enrichment tables in their own families."""

    backend = _BACKEND

    def __init__(
        self,
        path: str | Path,
        *,
        sync: bool = False,
        read_only: bool = False,
        scratch: bool = False,
    ) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._secondary_dir: tempfile.TemporaryDirectory[str] | None = None
        try:
            if read_only:
                # A secondary instance follows a live writer; it needs a private directory
                # for its own info log.
                self._secondary_dir = temporary_directory("usersignals-reader-")
                access = AccessType.secondary(self._secondary_dir.name)
                db = Rdict(str(self.path), _reader_options(), access_type=access)
                db.try_catch_up_with_primary()
            else:
                self.path.mkdir(parents=True, exist_ok=True)
                db = Rdict(str(self.path), _options())
        except Exception as exc:
            mode = "read-only" if read_only else "read-write"
            detail = str(exc)
            if not read_only and "LOCK" in detail and "temporarily unavailable" in detail:
                # RocksDB's own words ("While lock file: .../LOCK: Resource temporarily
                # unavailable") name no cause a user would recognise.
                detail = (
                    "another process has this store open for writing (a processor running "
                    "on it?): stop it first; serve and get read it alongside"
                )
            raise StoreError(_BACKEND, "open", f"{self.path} ({mode}): {detail}") from exc
        write_options = WriteOptions()
        write_options.sync = sync
        # A scratch store's 100,000 records of a backfill shard wrote in 0.08 s without the
        # WAL against 0.13-0.18 s through it (measured).
        # rocksdict's stub declares a method; the extension has a settable attribute.
        write_options.disable_wal = scratch  # type: ignore[method-assign,assignment]
        super().__init__(db, "default", write_options)
        self._tables: dict[str, _RocksTable] = {}

    @property
    def secondary_path(self) -> Path | None:
        """A reader's own directory (its RocksDB info log); ``None`` for the writer."""
        return Path(self._secondary_dir.name) if self._secondary_dir is not None else None

    def table(self, name: str) -> _RocksTable:
        column = table_column(name)
        table = self._tables.get(column)
        if table is None:
            try:
                self._db.get_column_family_handle(column)
            except Exception:
                if self.read_only:
                    raise StoreError(
                        _BACKEND, "open", f"no table {name!r} in {self.path}"
                    ) from None
                self._db.create_column_family(column, _options())
            table = self._tables[column] = _RocksTable(self._db, column, self._write_options)
        return table

    def ingest(self, files: Sequence[Path]) -> None:
        """Add user-record files (:func:`write_sorted_file`) to the store, each key's value in
        a file replacing the stored one. A file on the store's file system is moved in (a
        hard link), one elsewhere copied."""
        options = IngestExternalFileOptions()
        options.set_move_files(True)
        try:
            self._db.ingest_external_file([str(file) for file in files], options)
        except Exception as exc:
            raise StoreError(_BACKEND, "ingest", str(exc)) from exc

    def write_buffer_bytes(self) -> int:
        """The user records' write buffers (memtables) now, in bytes: RocksDB's largest moving
        part of a processor's memory (at most two of 64 MB by default)."""
        return int(self._db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0)

    def refresh(self) -> None:
        if self.read_only:
            try:
                self._db.try_catch_up_with_primary()
            except Exception as exc:
                raise StoreError(_BACKEND, "refresh", str(exc)) from exc

    def close(self) -> None:
        # Column-family views hold the database open (and its lock) until closed themselves.
        for table in self._tables.values():
            table.close_view()
        self._tables.clear()
        try:
            self._db.close()
        finally:
            if self._secondary_dir is not None:
                self._secondary_dir.cleanup()
