"""Backfill: the signals' states computed from history, by the service's own engine.

The archive is split by user into shards, one process each: the users a sample shows heavy
are placed to even out the shards' events (see :mod:`usersignals.offline.balance`), the rest
go by a stable hash of the user id.
Every shard reads the archive, decodes only its users' records (see
:mod:`usersignals.offline.share`), keeps their valid events inside the boundary, and runs
them through the same :class:`~usersignals.processing.engine.Engine` the processor runs, in
micro-batches, into a private store (:mod:`usersignals.offline.scratch`: in memory, RocksDB
on a temporary directory when large). The shard's records are then
merged into the store's (see :mod:`usersignals.offline.bulk_load`): the backfilled signals'
states replace theirs, other signals' states stay. For a RocksDB store each shard merges its
own, in its process, into a table file the parent moves into the store (a hard link: the
shards work in a hidden directory beside the store); for Redis the parent merges them, one
shard after the other.

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
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice, repeat
from pathlib import Path
from typing import cast

import msgspec

from usersignals._core import CoreError, replace_progress
from usersignals.aggregations.context import check_view_time
from usersignals.assembly import build_decoder, open_store
from usersignals.config import Settings
from usersignals.durations import HOUR_MS
from usersignals.errors import StateCodecError
from usersignals.events.model import BadEvent, Event, Position
from usersignals.ingest.archive import EventArchive
from usersignals.ingest.dead_letter import DeadLetterFile
from usersignals.offline.arrival import arrival_order
from usersignals.offline.balance import plan_user_shards
from usersignals.offline.boundary import Boundary, find_boundary, is_kafka
from usersignals.offline.bulk_load import (
    load_states,
    merged,
    user_records,
    write_backfill_offsets,
)
from usersignals.offline.common import (
    ShardPool,
    build_engine,
    check_dead_letter,
    check_workers,
    note_backfilled,
    open_existing,
    open_lookup_store,
    refuse_changed_definitions,
    select_signals,
)
from usersignals.offline.deletions import Deletions
from usersignals.offline.scratch import ScratchStore
from usersignals.offline.share import ArchiveShare, merge_dead_letters
from usersignals.processing.batch import BatchReport, MicroBatch
from usersignals.processing.engine import Engine
from usersignals.processing.pipeline import Segment
from usersignals.signals.registry import SignalRegistry
from usersignals.state.codec import decode_record
from usersignals.state.keys import SIGNALS_KEY, USER_PREFIX, user_key, user_of
from usersignals.state.rocks import RocksStore, write_sorted_file
from usersignals.state.store import StateStore
from usersignals.uninterrupted import temporary_directory

logger = logging.getLogger(__name__)

_SEQUENCE = "backfill"
#: Records rewritten per core call when a shard's states are loaded.
_PROGRESS_CHUNK = 5_000


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

    def __post_init__(self) -> None:
        check_workers(self.workers)
        check_dead_letter(self.dead_letter, self.archive)
        if self.until_ms is not None:
            check_view_time("until", self.until_ms)


@dataclass
class BackfillSummary:
    events: int = 0
    bad: int = 0
    #: Archive records the local shards decoded (valid and bad): each record once, by the
    #: shard of its user (not counted on Spark, where one task per file decodes it).
    decoded: int = 0
    #: Valid events past the boundary, left to the stream.
    after_boundary: int = 0
    #: Events past a user's stored progress: the stream applies them.
    left_to_stream: int = 0
    #: Users (per partition) whose stored progress is beyond the archive's last offset: the
    #: events in between are in no state the backfill wrote. Export more history, or expect
    #: the backfilled signals to miss them.
    behind_stream: int = 0
    #: Users whose stored record holds an event the stream applied after the archive's last
    #: event for them, by the hour of its event-id fingerprint (an archive without Kafka
    #: coordinates: no offsets to compare): the backfilled states miss it. Export more history.
    stream_ahead: int = 0
    users: int = 0
    #: Per Kafka partition the store's progress names and the archive holds no event of,
    #: the users whose progress names it (:func:`uncovered_partitions`): their backfilled
    #: signals miss those events. Export the whole topic.
    uncovered_partitions: dict[str, int] = field(default_factory=dict)
    #: User deletions in the archive (``{"op": "delete"}`` records), applied in place: the
    #: user's events before one are forgotten, as the stream forgot them.
    deletions: int = 0
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        """Whether the states hold every event up to where the stream continues: no user's
        progress or fingerprint beyond the archive, no partition the archive lacks. Only then is the
        backfill recorded as the versions' history (``signals plan``: warm)."""
        return not (self.behind_stream or self.stream_ahead or self.uncovered_partitions)

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
    #: The users the job places on a shard (see :mod:`usersignals.offline.balance`).
    assigned: dict[str, int]
    #: :func:`leaves_new_users`, decided once before any shard starts (the first shard's
    #: load puts users into the store while the others run).
    leaves_new_users: bool = False


@dataclass
class _ShardResult:
    summary: BackfillSummary
    #: The highest offset taken per Kafka partition.
    highest: dict[str, int]
    #: The highest offset of the shard's valid events per Kafka partition.
    ends: dict[str, int]
    #: Stored progress (partition, offset) that may lie beyond the archive's end: beyond the
    #: shard's own end, or on a partition it has no events of.
    beyond: list[tuple[str, int]]
    #: The places in the archive of the records in the shard's dead letters.
    bad_places: list[int]
    #: Per user, the real Kafka progress of the events taken (the records carry the
    #: feeding order until the load puts this in its place).
    progress: dict[str, dict[str, int]]
    #: For a RocksDB store: the shard's records as the store will hold them (real progress,
    #: merged with the stored records), a table file the load moves in, and their count.
    state_file: Path | None = None
    users: int = 0


def backfill(job: BackfillJob) -> BackfillSummary:
    """Compute the signals from the archive and merge their states into the store."""
    started = time.perf_counter()
    settings = job.settings
    # Fail early, in this process, on an unknown module or --only name.
    selected = select_signals(SignalRegistry.from_module(settings.signals), job.only)
    refuse_changed_definitions(settings, selected)
    shards = job.workers
    # The workers start now: they start up while this process samples the archive.
    with ShardPool(shards, __name__) as pool:
        archive = EventArchive(job.archive, settings.processing.batch_size)
        boundary = find_boundary(archive, build_decoder(settings), job.until_ms)
        assigned = plan_user_shards(archive, shards)
        summary = _shards_loaded(job, shards, pool, boundary, assigned, leaves_new_users(job))
    if summary.complete:
        note_backfilled(settings, selected)
    summary.seconds = time.perf_counter() - started
    return summary


def _shards_loaded(
    job: BackfillJob,
    shards: int,
    pool: ShardPool,
    boundary: Boundary,
    assigned: dict[str, int],
    leaves: bool,
) -> BackfillSummary:
    """Every shard computed (the first in this process) and merged into the store."""
    settings = job.settings
    with temporary_directory(".usersignals-backfill-", _scratch_parent(settings)) as scratch:
        tasks = [
            _Shard(job, i, shards, boundary, Path(scratch) / f"shard-{i}", assigned, leaves)
            for i in range(shards)
        ]
        loader = _Loader(settings)
        try:
            # The first shard runs here: its states are merged while the others still run
            # (they read the store as RocksDB secondaries, or Redis; their users differ).
            first = (lambda result: loader.load(tasks[0], result)) if shards > 1 else None
            results = pool.run(_run_shard, tasks, then=first)
            summary = _combine(results, boundary)
            if shards > 1 and job.dead_letter is not None:
                parts = [
                    (_dead_letters(t), r.bad_places) for t, r in zip(tasks, results, strict=True)
                ]
                merge_dead_letters(parts, job.dead_letter)
            if job.dead_letter is not None:  # after the archive's bad records
                DeadLetterFile(job.dead_letter).write(summary.report.rejected)
            pending = list(zip(tasks, results, strict=True))[1 if shards > 1 else 0 :]
            for task, result in pending:
                loader.load(task, result, summary.offsets if task is tasks[-1] else None)
            summary.users = loader.users
        finally:
            loader.close()
    if leaves:  # an --only backfill into a store the stream writes
        archived = {partition for result in results for partition in result.ends}
        summary.uncovered_partitions = uncovered_partitions(settings, archived)
    return summary


def _scratch_parent(settings: Settings) -> Path | None:
    """Where the shards' scratch stores and table files go: beside a RocksDB store, so that
    the files move in by a hard link (from another file system RocksDB copies them) and the
    shards' states take the store's disk, not the system's temporary directory (often a
    tmpfs, in memory); the system's temporary directory for Redis, or when the store's
    parent is not writable."""
    if settings.store.backend != "rocksdb":
        return None
    parent = Path(settings.store.path).resolve().parent
    return parent if os.access(parent, os.W_OK) else None


class _Loader:
    """Puts shards' computed states into the store (opened at the first shard)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.users = 0
        self._store: StateStore | None = None

    def load(
        self, shard: _Shard, result: _ShardResult, offsets: dict[str, int] | None = None
    ) -> None:
        """One shard's records; ``offsets`` (the hand-over) go with the last shard's."""
        if self._store is None:
            self._store = open_store(self.settings)
        if result.state_file is not None:  # merged by the shard: moved in as they are
            if result.users:
                cast(RocksStore, self._store).ingest([result.state_file])
            self.users += result.users
            if offsets:
                write_backfill_offsets(self._store, offsets)
            return
        computed = RocksStore(shard.directory)
        try:
            records = with_progress(user_records(computed), result.progress)
            horizon_ms = self.settings.processing.dedupe_horizon_ms
            self.users += load_states(records, self._store, horizon_ms, offsets)
        finally:
            computed.close()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def with_progress(
    records: Iterable[tuple[bytes, bytes]], progress: dict[str, dict[str, int]]
) -> Iterator[tuple[bytes, bytes]]:
    """Each computed record with the real Kafka progress of its user's events (none for an
    archive without coordinates) in place of the feeding order, rewritten in the core (one
    call per chunk of records): the record is not decoded into Python objects."""
    pending = iter(records)
    while chunk := list(islice(pending, _PROGRESS_CHUNK)):
        keys = [key for key, _ in chunk]
        # No coordinates in the archive, no progress for anyone: no user id read back.
        real = [progress.get(user_of(key), {}) for key in keys] if progress else [{}] * len(keys)
        try:
            rewritten = replace_progress([raw for _, raw in chunk], real)
        except CoreError as exc:
            if len(exc.args) != 2:  # not a record's: a bug in the call, raised as it is
                raise
            index, message = exc.args
            raise StateCodecError(keys[index], message) from exc
        yield from zip(keys, rewritten, strict=True)


def _combine(results: list[_ShardResult], boundary: Boundary) -> BackfillSummary:
    summary = BackfillSummary()
    highest: dict[str, int] = {}
    ends: dict[str, int] = {}
    for result in results:
        for partition, offset in result.ends.items():
            ends[partition] = max(ends.get(partition, -1), offset)
        part = result.summary
        summary.events += part.events
        summary.bad += part.bad
        summary.decoded += part.decoded
        summary.deletions += part.deletions
        summary.after_boundary += part.after_boundary
        summary.left_to_stream += part.left_to_stream
        summary.stream_ahead += part.stream_ahead
        summary.report.add(part.report)
        for partition, offset in result.highest.items():
            highest[partition] = max(highest.get(partition, -1), offset)
    summary.offsets = {p: boundary.cuts.get(p, offset + 1) for p, offset in highest.items()}
    summary.offsets.update({p: cut for p, cut in boundary.cuts.items() if p not in highest})
    summary.behind_stream = count_behind((pair for r in results for pair in r.beyond), ends)
    return summary


def uncovered_partitions(settings: Settings, archived: set[str]) -> dict[str, int]:
    """Per Kafka partition of the archive's topics that the archive holds no event of, the
    stored users whose progress names it: the backfilled signals miss those users' events
    there, and the stream, past them, never applies them (an export that lacks a partition).
    One pass over the store's records, for an ``--only`` backfill from a Kafka export."""
    topics = {partition.rpartition("/")[0] for partition in archived if "/" in partition}
    store = open_existing(settings) if topics else None
    if store is None:
        return {}
    uncovered: dict[str, int] = {}
    try:
        for key, raw in store.scan(USER_PREFIX):
            for partition in decode_record(key, raw).progress:
                if partition not in archived and partition.rpartition("/")[0] in topics:
                    uncovered[partition] = uncovered.get(partition, 0) + 1
    finally:
        store.close()
    return uncovered


def count_behind(progress: Iterable[tuple[str, int]], ends: dict[str, int]) -> int:
    """Stored progress (per user and partition) beyond the archive's last offset there."""
    return sum(1 for partition, offset in progress if offset > ends.get(partition, offset))


def _dead_letters(shard: _Shard) -> Path:
    return shard.directory.with_name(f"{shard.directory.name}-dead.jsonl")


def _run_shard(shard: _Shard) -> _ShardResult:
    """One shard's users, computed into a private store (on disk at ``shard.directory`` when
    large, or for the parent to read: a Redis store's shards)."""
    job = shard.job
    settings = job.settings
    registry = select_signals(SignalRegistry.from_module(settings.signals), job.only)
    lookups = open_lookup_store(settings, registry)
    existing = lookups if lookups is not None else open_existing(settings)
    store = ScratchStore(shard.directory)
    dead_letters = None
    if job.dead_letter is not None:
        # One shard writes the final file; several write theirs, merged in archive order.
        dead_letters = DeadLetterFile(
            job.dead_letter if shard.shards == 1 else _dead_letters(shard)
        )
    try:
        engine, decoder = build_engine(settings, registry, store, lookups)
        archive = EventArchive(job.archive, settings.processing.batch_size)
        share = ArchiveShare(archive, shard.index, shard.shards, dead_letters, shard.assigned)
        # Whose stored records to respect and merge with: none when the store has no users.
        # (Read too when users are left to the stream: it tells which have no record.)
        reads_users = shard.leaves_new_users or (existing is not None and _may_hold_users(existing))
        stored_users = existing if reads_users else None
        taker = Taker(shard.boundary, stored_users, shard.leaves_new_users)
        _apply_share(share.results(decoder), engine, taker, job.batch_size)
        taker.summary.decoded = share.decoded
        taker.summary.stream_ahead = taker.ahead_of_archive()
        taker.summary.deletions = share.deletions
        beyond = [
            (partition, offset)
            for partition, offset in taker.stored_progress()
            if offset > taker.ends.get(partition, -1)
        ]
        result = _ShardResult(
            taker.summary, taker.highest, taker.ends, beyond, share.bad_places, taker.progress
        )
        if settings.store.backend == "rocksdb":
            result.state_file = shard.directory.with_suffix(".sst")
            records = with_progress(user_records(store), taker.progress)
            horizon_ms = settings.processing.dedupe_horizon_ms
            final = merged(records, stored_users, horizon_ms)
            result.users = write_sorted_file(result.state_file, final)
            result.progress = {}  # in the file: not pickled back to the parent for nothing
        else:
            store.persist()  # the parent reads the records from the shard's directory
        return result
    finally:
        store.close()
        if existing is not None and existing is not lookups:
            existing.close()
        if lookups is not None:
            lookups.close()
        if dead_letters is not None:
            dead_letters.close()


def _apply_share(
    segments: Iterable[Segment], engine: Engine, taker: Taker, batch_size: int
) -> None:
    """A shard's archive segments through the engine, each deletion in its place."""
    deletions = Deletions()  # met so far: an event met later may be one they forget
    for segment in segments:
        taker.summary.bad += len(segment.decoded.bad)
        taker.take(*deletions.kept_columns(segment.decoded.events, segment.decoded.positions))
        if segment.control is not None and segment.control_position is not None:
            deletions.add(segment.control.user_id, segment.control_position)
            forget_user(engine, taker, segment.control.user_id)
        drain(engine, taker, batch_size)
    drain(engine, taker, 1)


def drain(engine: Engine, taker: Taker, at_least: int) -> None:
    if len(taker.events) >= at_least:
        batch = taker.take_batch()
        report = engine.process(batch)
        report.rejected = [taker.origin_of(bad) for bad in report.rejected]
        taker.summary.report.add(report)
        taker.summary.events += len(batch)


def forget_user(engine: Engine, taker: Taker, user_id: str) -> None:
    """A deletion record, applied as the stream applies it: the events taken before it are
    written, then the user's record is dropped; their later events start it again."""
    drain(engine, taker, 1)
    engine.delete_users([user_id])


class Taker:
    """Selects a shard's events: up to a user's stored progress where the store has one (so
    every state of the record covers the same events), else inside the boundary."""

    def __init__(
        self, boundary: Boundary, existing: StateStore | None, leaves_new_users: bool = False
    ) -> None:
        """``leaves_new_users`` (:func:`leaves_new_users`): a user without a record in the
        store is left to the stream, whose events at Kafka coordinates it meets anyway."""
        self.boundary = boundary
        self.existing = existing
        self.leaves_new_users = leaves_new_users and existing is not None
        #: Users of the events given whose record the store does not hold.
        self._unrecorded: set[str] = set()
        self.summary = BackfillSummary()
        #: The highest offset per Kafka partition of the valid events given, and of those taken.
        self.ends: dict[str, int] = {}
        self.highest: dict[str, int] = {}
        self.events: list[Event] = []
        self.positions: list[Position] = []
        #: Where each event taken came from (the archive's row or Kafka coordinate), index
        #: for index with ``positions`` (the feeding order): what a dead letter names.
        self.origins: list[Position] = []
        #: The batch last taken: its first feeding number, its events' origins (as taken)
        #: and the arrival order it was fed in (``None``: as taken).
        self.taken_origins: tuple[int, list[Position], list[int] | None] = (0, [], None)
        #: The Kafka coordinates of the events taken, index for index (while all have them).
        self._arrivals: list[tuple[str, int]] = []
        self._progress: dict[str, dict[str, int]] = {}
        #: Per user, the highest offset taken per Kafka partition: the progress the load
        #: writes into the user's record.
        self.progress: dict[str, dict[str, int]] = {}
        #: Per user with a stored record, the start of the newest hour its event-id
        #: fingerprints hold, and the newest event time taken for them from an archive
        #: without coordinates (:meth:`ahead_of_archive`).
        self._stream_newest: dict[str, int] = {}
        self._taken_newest: dict[str, int] = {}
        self._sequence = 0

    def take(self, events: list[Event], positions: list[Position]) -> None:
        if not any(map(is_kafka, positions)):
            self._load_progress(events)  # for count_behind
            self._take_rows(events, positions)
            return
        boundary = self.boundary
        for position in positions:
            if is_kafka(position):
                end = self.ends.get(position.partition, -1)
                self.ends[position.partition] = max(end, position.offset)
        self._load_progress(events)
        for event, position in zip(events, positions, strict=True):
            applied = None
            if is_kafka(position):
                # Handed over by the offsets, not by the fingerprints' times.
                self._stream_newest.pop(event.user_id, None)
                applied = self._progress.get(event.user_id, {}).get(position.partition)
            if applied is not None:
                # The stream stands at ``applied`` for this user: the states must cover
                # exactly the events up to it, whatever --until says.
                if position.offset > applied:
                    self.summary.left_to_stream += 1
                    continue
            elif self.leaves_new_users and is_kafka(position) and event.user_id in self._unrecorded:
                self.summary.left_to_stream += 1
                continue
            elif not boundary.includes(event, position):
                self.summary.after_boundary += 1
                continue
            self.events.append(event)
            if is_kafka(position):
                self._arrivals.append((position.partition, position.offset))
            # The engine sees positions in the order it is fed: an archive need not be in
            # offset order (a late event sits in an earlier time partition), and the engine
            # would take a lower offset after a higher one for a replay. The real progress is
            # tracked here and written into the records as they are loaded.
            self._sequence += 1
            self.positions.append(Position(_SEQUENCE, self._sequence))
            self.origins.append(position)
            if is_kafka(position):
                partition, offset = position.partition, position.offset
                self.highest[partition] = max(self.highest.get(partition, -1), offset)
                progress = self.progress.setdefault(event.user_id, {})
                progress[partition] = max(progress.get(partition, -1), offset)

    def take_batch(self) -> MicroBatch:
        """The events taken so far, as one batch, in the order the stream delivered them
        (:func:`~usersignals.offline.arrival.arrival_order`) when every one carries Kafka
        coordinates, else in archive order. An archive laid out by event time holds a late
        event before events that arrived earlier, and the event-id dedupe judges a repeat by
        what arrived before it. Exact when a shard's events fit in one batch
        (``BackfillJob.batch_size``); between batches, archive order."""
        events = self.events
        order: list[int] | None = None
        if len(self._arrivals) == len(events):
            spread = {user for user, partitions in self.progress.items() if len(partitions) > 1}
            order = arrival_order(events, self._arrivals, spread)
            events = [events[i] for i in order]
        first = self.positions[0].offset if self.positions else 0
        self.taken_origins = (first, self.origins, order)
        batch = MicroBatch(events, self.positions)
        self.events, self.positions, self._arrivals, self.origins = [], [], [], []
        return batch

    def origin_of(self, bad: BadEvent) -> BadEvent:
        """A dead letter of the batch last taken, at the event's own place (the engine saw
        the feeding order; the batch may be in arrival order, ``order``)."""
        first, origins, order = self.taken_origins
        if bad.position is None or bad.position.partition != _SEQUENCE:
            return bad
        index = bad.position.offset - first
        return msgspec.structs.replace(
            bad, position=origins[index if order is None else order[index]]
        )

    def _take_rows(self, events: list[Event], positions: list[Position]) -> None:
        """``take`` for a block without Kafka coordinates (an archive's rows): no stored
        progress applies, only the time boundary (in C-level loops; a backfill's hot path)."""
        until = self.boundary.until_ms
        if until is None:
            taken, origins = events, positions
        else:
            kept = [i for i, event in enumerate(events) if event.ts <= until]
            taken, origins = [events[i] for i in kept], [positions[i] for i in kept]
        self.origins.extend(origins)
        if self._stream_newest:
            self._note_newest(taken)
        self.summary.after_boundary += len(events) - len(taken)
        first = self._sequence + 1
        self._sequence += len(taken)
        self.events.extend(taken)
        self.positions.extend(map(Position, repeat(_SEQUENCE), range(first, self._sequence + 1)))

    def _note_newest(self, taken: list[Event]) -> None:
        watched, newest = self._stream_newest, self._taken_newest
        for event in taken:
            user = event.user_id
            if user in watched and event.ts > newest.get(user, -1):
                newest[user] = event.ts

    def ahead_of_archive(self) -> int:
        """The users seen whose record holds an event the stream applied after the newest
        event taken for them from an archive without coordinates: a fingerprint hour starting
        later (events inside that hour cannot be told apart; a deployment without a dedupe
        horizon keeps no fingerprints, so none is counted)."""
        taken = self._taken_newest
        return sum(1 for user, hour in self._stream_newest.items() if hour > taken.get(user, -1))

    def stored_progress(self) -> Iterator[tuple[str, int]]:
        """The stored progress of the users seen, per partition (see :func:`count_behind`)."""
        for progress in self._progress.values():
            yield from progress.items()

    def _load_progress(self, events: list[Event]) -> None:
        """The stored progress of the events' users not seen yet (read once per user)."""
        if self.existing is None:
            return
        new = sorted({event.user_id for event in events} - self._progress.keys())
        keys = [user_key(user) for user in new]
        for user, key, raw in zip(new, keys, self.existing.get_many(keys), strict=True):
            if not raw:
                self._progress[user] = {}
                self._unrecorded.add(user)
                continue
            record = decode_record(key, raw)
            self._progress[user] = record.progress
            if record.seen:
                self._stream_newest[user] = max(record.seen) * HOUR_MS


def leaves_new_users(job: BackfillJob) -> bool:
    """Whether a user without a record is left to the stream: when some of the module's
    signals are backfilled (``--only``) into a store the stream writes — a processor has
    recorded its signals there (it may have met no valid event yet), or it holds users. A
    record written for such a user would claim every signal applied their events (the
    progress is the record's), and the stream would skip them for the signals not
    backfilled. (Checked with one scan, also for Redis: only ``--only`` backfills pay it.)"""
    if not job.only:
        return False
    existing = open_existing(job.settings)
    if existing is None:
        return False
    try:
        if existing.get_many([SIGNALS_KEY])[0] is not None:
            return True
        return next(existing.scan(USER_PREFIX), None) is not None
    finally:
        existing.close()


def _may_hold_users(store: StateStore) -> bool:
    """False when ``store`` surely holds no user record: a RocksDB store, checked with one
    seek. A first backfill into a store holding only its lookup tables then reads no
    user's record, neither for its progress nor to merge: at 200,000 events that was 0.19
    s of a 2.7 s backfill, for keys that were all absent. A Redis store is not checked (a
    SCAN for one key may walk the whole keyspace); its users are read as before."""
    if isinstance(store, RocksStore):
        return next(store.scan(USER_PREFIX), None) is not None
    return True
