"""Backfill: the signals' states computed from history, by the service's own engine.

The archive is split by user (a stable hash of the user id) into shards, one process each.
Every shard reads the archive, keeps its users' valid events inside the boundary, and runs
them through the same :class:`~usersignals.processing.engine.Engine` the processor runs, in
micro-batches, into a private RocksDB on a temporary directory. The parent then merges the
shards' records into the store (see :mod:`usersignals.offline.bulk_load`): the backfilled
signals' states replace theirs, other signals' states stay.

Hand-over (see :mod:`usersignals.offline.boundary`): events carry the position the live
source gives them, so each user's progress says which offsets the states include, and the
processor applies exactly the rest. When a user's record in the store already has progress
for a partition (the stream has been computing other signals), the backfill takes only that
user's events up to that offset: after the merge, every state of the record covers the same
events, and the stream continues for all of them from there. Run it with the processor
stopped: the merge needs the store's single writer.
"""

from __future__ import annotations

import logging
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from usersignals.app import build_decoder, open_store
from usersignals.config import Settings
from usersignals.events.model import Event, Position
from usersignals.ingest.dead_letter import DeadLetterFile
from usersignals.offline.archive import EventArchive
from usersignals.offline.boundary import Boundary, find_boundary, is_kafka
from usersignals.offline.bulk_load import load_states, user_records
from usersignals.offline.common import build_engine, open_lookup_store, select_signals, shard_of
from usersignals.processing.batch import BatchReport, MicroBatch
from usersignals.processing.engine import Engine
from usersignals.signals.registry import SignalRegistry
from usersignals.state.codec import decode_record, encode_record
from usersignals.state.keys import user_key, user_of
from usersignals.state.rocks import RocksStore
from usersignals.state.store import StateStore

logger = logging.getLogger(__name__)

_SEQUENCE = "backfill"
_CHUNK = 5_000


@dataclass(frozen=True)
class BackfillJob:
    """What to backfill: an archive, the deployment's settings, which signals, up to when."""

    archive: str
    settings: Settings
    only: tuple[str, ...] = ()
    until_ms: int | None = None
    workers: int = 1
    dead_letter: Path | None = None
    #: Events per engine micro-batch. Larger than the stream's: a user's states are decoded
    #: and encoded once per batch, and offline nothing waits for a batch to close. The
    #: states do not depend on it (they are canonical).
    batch_size: int = 200_000


@dataclass
class BackfillSummary:
    events: int = 0
    bad: int = 0
    #: Valid events past the boundary, left to the stream.
    after_boundary: int = 0
    #: Events past a user's stored progress: the stream applies them.
    left_to_stream: int = 0
    #: Users (per partition) whose stored progress is beyond the archive's last offset: the
    #: events in between are in no state the backfill wrote. Export more history, or expect
    #: the backfilled signals to miss them.
    behind_stream: int = 0
    users: int = 0
    seconds: float = 0.0
    #: Per Kafka partition, the next offset the stream must apply.
    offsets: dict[str, int] = field(default_factory=dict)
    report: BatchReport = field(default_factory=BatchReport)

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class _Shard:
    job: BackfillJob
    index: int
    shards: int
    boundary: Boundary
    directory: Path


@dataclass
class _ShardResult:
    summary: BackfillSummary
    #: The highest offset taken per Kafka partition.
    highest: dict[str, int]


def backfill(job: BackfillJob) -> BackfillSummary:
    """Compute the signals from the archive and merge their states into the store."""
    started = time.perf_counter()
    settings = job.settings
    # Fail early, in this process, on an unknown module or --only name.
    select_signals(SignalRegistry.from_module(settings.signals), job.only)
    archive = EventArchive(job.archive, settings.processing.batch_size)
    boundary = find_boundary(archive, build_decoder(settings), job.until_ms)
    shards = max(1, job.workers)
    with tempfile.TemporaryDirectory(prefix="usersignals-backfill-") as scratch:
        tasks = [
            _Shard(job, i, shards, boundary, Path(scratch) / f"shard-{i}") for i in range(shards)
        ]
        if shards == 1:
            results = [_run_shard(tasks[0])]
        else:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(shards, mp_context=context) as pool:
                results = list(pool.map(_run_shard, tasks))
        summary = _combine(results, boundary)
        store = open_store(settings)
        try:
            for task in tasks:
                shard_store = RocksStore(task.directory)
                try:
                    offsets = summary.offsets if task is tasks[-1] else None
                    summary.users += load_states(user_records(shard_store), store, offsets)
                finally:
                    shard_store.close()
        finally:
            store.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _combine(results: list[_ShardResult], boundary: Boundary) -> BackfillSummary:
    summary = BackfillSummary()
    highest: dict[str, int] = {}
    for result in results:
        part = result.summary
        summary.events += part.events
        summary.bad += part.bad
        summary.after_boundary += part.after_boundary
        summary.left_to_stream += part.left_to_stream
        summary.behind_stream += part.behind_stream
        summary.report.add(part.report)
        for partition, offset in result.highest.items():
            highest[partition] = max(highest.get(partition, -1), offset)
    summary.offsets = {p: boundary.cuts.get(p, offset + 1) for p, offset in highest.items()}
    summary.offsets.update({p: cut for p, cut in boundary.cuts.items() if p not in highest})
    return summary


def _run_shard(shard: _Shard) -> _ShardResult:
    """One shard's users, computed into a private RocksDB at ``shard.directory``."""
    job = shard.job
    settings = job.settings
    registry = select_signals(SignalRegistry.from_module(settings.signals), job.only)
    lookups = open_lookup_store(settings, registry)
    existing = lookups if lookups is not None else open_existing(settings)
    store = RocksStore(shard.directory)
    dead_letters = None
    if shard.index == 0 and job.dead_letter is not None:
        dead_letters = DeadLetterFile(job.dead_letter)
    try:
        engine, decoder = build_engine(settings, registry, store, lookups)
        archive = EventArchive(job.archive, settings.processing.batch_size)
        taker = Taker(shard.boundary, existing, (shard.index, shard.shards))
        for block in archive.decoded(decoder, dead_letters):
            if shard.index == 0:
                taker.summary.bad += len(block.bad)
            taker.take(block.events, block.positions)
            drain(engine, taker, job.batch_size)
        drain(engine, taker, 1)
        taker.finish(store)
        return _ShardResult(taker.summary, taker.highest)
    finally:
        store.close()
        if existing is not None and existing is not lookups:
            existing.close()
        if lookups is not None:
            lookups.close()
        if dead_letters is not None:
            dead_letters.close()


def drain(engine: Engine, taker: Taker, at_least: int) -> None:
    if len(taker.events) >= at_least:
        batch = MicroBatch(taker.events, taker.positions)
        taker.summary.report.add(engine.process(batch))
        taker.summary.events += len(batch)
        taker.events, taker.positions = [], []


class Taker:
    """Selects a shard's events: up to a user's stored progress where the store has one (so
    every state of the record covers the same events), else inside the boundary."""

    def __init__(
        self,
        boundary: Boundary,
        existing: StateStore | None,
        shard: tuple[int, int] | None = None,
        ends: dict[str, int] | None = None,
    ) -> None:
        self.boundary = boundary
        #: The archive's highest offset per Kafka partition: given, or (when every record
        #: passes through this taker, as in a local shard) tracked while reading.
        self.ends: dict[str, int] = dict(ends or {})
        self._track_ends = ends is None
        #: (index, count): keep only this shard's users; ``None``: every user given.
        self.shard = shard
        self.existing = existing
        self.summary = BackfillSummary()
        self.highest: dict[str, int] = {}
        self.events: list[Event] = []
        self.positions: list[Position] = []
        self._progress: dict[str, dict[str, int]] = {}
        self._real: dict[str, dict[str, int]] = {}
        self._sequence = 0

    def take(self, events: list[Event], positions: list[Position]) -> None:
        boundary, shard = self.boundary, self.shard
        pairs = zip(events, positions, strict=True)
        if shard is None:
            mine = list(pairs)
        else:
            index, count = shard
            mine = [pair for pair in pairs if shard_of(pair[0].user_id, count) == index]
        if self._track_ends:
            for position in positions:
                if is_kafka(position):
                    end = self.ends.get(position.partition, -1)
                    self.ends[position.partition] = max(end, position.offset)
        self._load_progress({event.user_id for event, _ in mine})
        for event, position in mine:
            applied = None
            if is_kafka(position):
                applied = self._progress.get(event.user_id, {}).get(position.partition)
            if applied is not None:
                # The stream stands at ``applied`` for this user: the states must cover
                # exactly the events up to it, whatever --until says.
                if position.offset > applied:
                    self.summary.left_to_stream += 1
                    continue
            elif not boundary.includes(event, position):
                self.summary.after_boundary += 1
                continue
            self.events.append(event)
            # The engine sees positions in the order it is fed: an archive need not be in
            # offset order (a late event sits in an earlier time partition), and the engine
            # would take a lower offset after a higher one for a replay. The real progress is
            # tracked here and written into the records at the end (``finish``).
            self._sequence += 1
            self.positions.append(Position(_SEQUENCE, self._sequence))
            if is_kafka(position):
                partition, offset = position.partition, position.offset
                self.highest[partition] = max(self.highest.get(partition, -1), offset)
                progress = self._real.setdefault(event.user_id, {})
                progress[partition] = max(progress.get(partition, -1), offset)

    def finish(self, store: StateStore) -> None:
        """Replace the feeding order in each computed record by the real Kafka progress, and
        count the users whose stored progress is beyond the archive's end (a gap)."""
        self.summary.behind_stream = sum(
            1
            for progress in self._progress.values()
            for partition, offset in progress.items()
            if partition in self.ends and offset > self.ends[partition]
        )
        puts: dict[bytes, bytes] = {}
        for key, raw in list(user_records(store)):
            record = decode_record(key, raw)
            record.progress = dict(self._real.get(user_of(key), {}))
            puts[key] = encode_record(record)
            if len(puts) >= _CHUNK:
                store.write(puts)
                puts = {}
        if puts:
            store.write(puts)

    def _load_progress(self, users: set[str]) -> None:
        """The stored progress of users not seen yet (read once per user)."""
        if self.existing is None:
            return
        new = sorted(users - self._progress.keys())
        keys = [user_key(user) for user in new]
        for user, key, raw in zip(new, keys, self.existing.get_many(keys), strict=True):
            self._progress[user] = decode_record(key, raw).progress if raw else {}


def open_existing(settings: Settings) -> StateStore | None:
    """The deployment's store, read-only, if it exists yet (to respect stored progress)."""
    if settings.store.backend == "rocksdb" and not (Path(settings.store.path) / "CURRENT").exists():
        return None
    return open_store(settings, read_only=True)
