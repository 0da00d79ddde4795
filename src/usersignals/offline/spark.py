"""Backfill and training sets on Apache Spark, for archives that outgrow one machine.

The plan, for both: one Spark task per archive file decodes and validates it with the live
path's decoder (bad records are collected as dead letters); the valid events are partitioned
by user (the stable hash of the local shards; the local backfill's placing of heavy users,
:mod:`usersignals.offline.balance`, is not applied here) and sorted within a partition, each
user's by position for a backfill (the archive's order, which the Taker puts in the stream's:
``offline/arrival.py``), by time for a training set (which judges repeats itself first);
``mapInArrow`` then runs, per partition, the very code the local runner runs — the backfill's
:class:`~usersignals.offline.backfill.Taker` and the service's Engine, or
:func:`~usersignals.offline.training.compute_features` — over an in-memory store.

A backfill writes each partition's user records as Parquet files (``key``, ``value``) that
:func:`~usersignals.offline.bulk_load.load_states` merges into the store (RocksDB or Redis
Cluster). A training set's values are written by the executors too, as Parquet parts sorted
by label row (a Spark ``orderBy``); the driver then streams them, a row group at a time, into
the output with :func:`~usersignals.offline.features_file.write_features` — the same file,
byte for byte, as the local runner's — and never holds the whole result. Lookups read the
store's embedded tables (reachable in local mode and on a shared volume) or the Redis / HTTP
sources the settings name.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from usersignals.assembly import build_decoder, open_store
from usersignals.config import Settings
from usersignals.events.model import BadEvent, Event, Position
from usersignals.ingest.archive import ArchiveFile, EventArchive, file_blocks
from usersignals.ingest.dead_letter import DeadLetterFile
from usersignals.offline.backfill import (
    BackfillJob,
    BackfillSummary,
    Taker,
    count_behind,
    drain,
    forget_user,
    leaves_new_users,
    with_progress,
)
from usersignals.offline.boundary import ARCHIVE_PREFIX, Boundary
from usersignals.offline.bulk_load import load_states, state_files, user_records
from usersignals.offline.common import (
    build_engine,
    open_existing,
    open_lookup_store,
    refuse_changed_definitions,
    select_signals,
    shard_of,
)
from usersignals.offline.deletions import Deletions
from usersignals.offline.features_file import (
    ROW,
    read_parts,
    text_batches,
    value_names,
    write_features,
)
from usersignals.offline.label_shards import Label
from usersignals.offline.memory import MemoryStore
from usersignals.offline.plan import record_backfill
from usersignals.offline.spark_errors import quiet_task_failures, raises_task_errors
from usersignals.offline.training import (
    FeatureEngine,
    TrainingInputs,
    TrainingJob,
    TrainingSummary,
    compute_features,
    feature_columns,
    job_registry,
)
from usersignals.processing.pipeline import Segment, decode_segments
from usersignals.signals.registry import SignalRegistry
from usersignals.uninterrupted import temporary_directory

EVENT_SCHEMA = (
    "shard int, kind int, user_id string, ts long, source string, offset long, "
    "payload binary, row long, reason string, detail string"
)
_EVENT, _LABEL, _BAD, _DELETE = 0, 1, 2, 3
#: Label rows per Arrow batch a training task hands to its executor: bounded, whatever the
#: partition's size (a value can be tens of KB of JSON).
_VALUE_BATCH_ROWS = 1_024


def spark_session(
    master: str = "local[2]", partitions: int = 4, conf: Mapping[str, str] | None = None
) -> Any:
    """A SparkSession for usersignals jobs (``master``: ``local[N]`` or a cluster URL; ``conf``:
    further Spark settings, e.g. ``spark.driver.memory``)."""
    from pyspark.sql import SparkSession

    # Executors run this interpreter, so they import the same usersignals and signals module.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    spark = (
        builder.master(master)
        .appName("usersignals-offline")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(partitions))
        .config("spark.default.parallelism", str(partitions))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )
    quiet_task_failures(spark, master)
    return spark


def _decode_files(settings: Settings, shards: int) -> Any:
    def run(files: Iterator[tuple[str, str]]) -> Iterator[tuple[Any, ...]]:
        decoder = build_decoder(settings)
        # Built here, in the task: closures travel by value, and an encoder does not pickle.
        # JSON, not msgpack: an attribute may hold an integer beyond 64 bits, which msgpack
        # cannot carry and the live path applies.
        pack = msgspec.json.Encoder().encode
        for path, name in files:
            for block in file_blocks(ArchiveFile(Path(path), name), settings.processing.batch_size):
                segments = decode_segments(decoder, block.lines, block.positions)
                segments[-1].decoded.bad += block.bad
                for segment in segments:
                    yield from _segment_rows(segment, shards, pack)

    return run


def _segment_rows(
    segment: Segment, shards: int, pack: Callable[[Event], bytes]
) -> Iterator[tuple[Any, ...]]:
    """A decoded segment of an archive file as :data:`EVENT_SCHEMA` rows: its events, its
    bad records, and the deletion after them (a row without payload)."""
    result = segment.decoded
    for event, position in zip(result.events, result.positions, strict=True):
        yield (
            shard_of(event.user_id, shards), _EVENT, event.user_id, event.ts,
            position.partition, position.offset, pack(event), None, None, None,
        )  # fmt: skip
    for bad in result.bad:
        where = bad.position or Position("", -1)
        yield (
            -1, _BAD, None, None, where.partition, where.offset, bad.raw, None,
            bad.reason, bad.detail,
        )  # fmt: skip
    if segment.control is not None and segment.control_position is not None:
        user, at = segment.control.user_id, segment.control_position
        yield (
            shard_of(user, shards), _DELETE, user, None, at.partition, at.offset, None, None,
            None, None,
        )  # fmt: skip


def archive_frame(spark: Any, location: str, settings: Settings, shards: int) -> Any:
    """The archive as a DataFrame (:data:`EVENT_SCHEMA`): one task per file, validated."""
    files = [(str(f.path), f.name) for f in EventArchive(location).files]
    rdd = spark.sparkContext.parallelize(files, len(files))
    return spark.createDataFrame(rdd.mapPartitions(_decode_files(settings, shards)), EVENT_SCHEMA)


def _dead_letters(frame: Any, path: Path | None) -> int:
    from pyspark.sql import functions as f

    bad = frame.filter(f.col("kind") == _BAD).orderBy("source", "offset").collect()
    if path is not None and bad:
        with DeadLetterFile(path) as dead:
            dead.write(
                [
                    BadEvent(r.reason, r.detail, bytes(r.payload), Position(r.source, r.offset))
                    for r in bad
                ]
            )
    return len(bad)


def _boundary(frame: Any, until_ms: int | None) -> Boundary:
    from pyspark.sql import functions as f

    if until_ms is None:
        return Boundary()
    late = frame.filter(
        (f.col("kind") == _EVENT)
        & (f.col("ts") > until_ms)
        & ~f.col("source").startswith(ARCHIVE_PREFIX)
    )
    rows = late.groupBy("source").agg(f.min("offset").alias("cut")).collect()
    return Boundary(until_ms, {row.source: row.cut for row in rows})


def _segments_of(batch: Any) -> Iterator[tuple[list[Event], list[Position], str | None]]:
    """A batch of a partition's rows, in their order, as runs of events, each with the user
    whose deletion follows it (``None`` for the last run)."""
    unpack = msgspec.json.Decoder(Event).decode
    columns = batch.to_pydict()
    events: list[Event] = []
    positions: list[Position] = []
    rows = zip(
        columns["kind"], columns["user_id"], columns["payload"], columns["source"],
        columns["offset"], strict=True,
    )  # fmt: skip
    for kind, user, payload, source, offset in rows:
        if kind == _DELETE:
            yield events, positions, user
            events, positions = [], []
        else:
            events.append(unpack(payload))
            positions.append(Position(source, offset))
    yield events, positions, None


def _backfill_partition(
    job: BackfillJob, boundary: Boundary, ends: dict[str, int], leaves: bool, failed: Path
) -> Any:
    def run(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        settings = job.settings
        registry = select_signals(SignalRegistry.from_module(settings.signals), job.only)
        lookups = open_lookup_store(settings, registry)
        existing = lookups if lookups is not None else open_existing(settings)
        store = MemoryStore()
        try:
            engine, _ = build_engine(settings, registry, store, lookups)
            taker = Taker(boundary, existing, leaves)
            for batch in batches:
                for events, positions, deleted in _segments_of(batch):
                    taker.take(events, positions)
                    if deleted is not None:
                        forget_user(engine, taker, deleted)
                drain(engine, taker, job.batch_size)
            drain(engine, taker, 1)
            taker.summary.behind_stream = count_behind(taker.stored_progress(), ends)
            taker.summary.stream_ahead = taker.ahead_of_archive()
            _keep_failed(failed, taker.summary.report.rejected)
        finally:
            for opened in {id(s): s for s in (lookups, existing) if s is not None}.values():
                opened.close()
        records = list(with_progress(user_records(store), taker.progress))
        summary = taker.summary
        yield pa.RecordBatch.from_pydict(
            {
                "key": [key for key, _ in records] + [b""],
                "value": [value for _, value in records] + [_summary_bytes(summary, taker)],
            },
            schema=pa.schema([("key", pa.binary()), ("value", pa.binary())]),
        )

    return run


class _PartSummary(msgspec.Struct):
    events: int
    after_boundary: int
    left_to_stream: int
    behind_stream: int
    highest: dict[str, int]
    #: Repeated event ids the partition's engine dropped: the command says how many, as
    #: the local runner's summary does.
    repeats: int = 0
    stream_ahead: int = 0


def _summary_bytes(summary: BackfillSummary, taker: Taker) -> bytes:
    part = _PartSummary(
        summary.events, summary.after_boundary, summary.left_to_stream, summary.behind_stream,
        taker.highest, summary.report.repeats, summary.stream_ahead,
    )  # fmt: skip
    return msgspec.msgpack.encode(part)


@raises_task_errors
def backfill_spark(spark: Any, job: BackfillJob, states_dir: Path) -> BackfillSummary:
    """The backfill on Spark: states as Parquet files in ``states_dir``, then bulk-loaded."""
    from pyspark.sql import functions as f

    started = time.perf_counter()
    selected = select_signals(SignalRegistry.from_module(job.settings.signals), job.only)
    refuse_changed_definitions(job.settings, selected)  # as backfill() does, before any job
    shards = job.workers
    frame = archive_frame(spark, job.archive, job.settings, shards).cache()
    summary = BackfillSummary(bad=_dead_letters(frame, job.dead_letter))
    boundary = _boundary(frame, job.until_ms)
    kafka = frame.filter((f.col("kind") == _EVENT) & ~f.col("source").startswith(ARCHIVE_PREFIX))
    ends = {
        row.source: row.end
        for row in kafka.groupBy("source").agg(f.max("offset").alias("end")).collect()
    }
    summary.deletions = frame.filter(f.col("kind") == _DELETE).count()
    # A user's deletions sort among their events by position: applied in place, as locally.
    events = (
        frame.filter(f.col("kind").isin(_EVENT, _DELETE))
        .repartition(shards, "shard")
        .sortWithinPartitions("user_id", "source", "offset")
    )
    with _failed_dir(states_dir.parent) as failed:
        run = _backfill_partition(job, boundary, ends, leaves_new_users(job), failed)
        records = events.mapInArrow(run, "key binary, value binary")
        records.write.mode("overwrite").parquet(str(states_dir))
        summary.report.rejected = _failed_events(failed)
    frame.unpersist()
    if job.dead_letter is not None:  # after the archive's bad records, as locally
        DeadLetterFile(job.dead_letter).write(summary.report.rejected)
    highest: dict[str, int] = {}
    for key, value in state_files(states_dir):
        if key:
            continue
        part = msgspec.msgpack.decode(value, type=_PartSummary)
        summary.events += part.events
        summary.after_boundary += part.after_boundary
        summary.left_to_stream += part.left_to_stream
        summary.behind_stream += part.behind_stream
        summary.stream_ahead += part.stream_ahead
        summary.report.repeats += part.repeats
        for partition, offset in part.highest.items():
            highest[partition] = max(highest.get(partition, -1), offset)
    summary.offsets = {p: boundary.cuts.get(p, o + 1) for p, o in highest.items()}
    summary.offsets.update({p: c for p, c in boundary.cuts.items() if p not in highest})
    store = open_store(job.settings)
    try:
        users = ((key, value) for key, value in state_files(states_dir) if key)
        horizon_ms = job.settings.processing.dedupe_horizon_ms
        summary.users = load_states(users, store, horizon_ms, summary.offsets)
        if summary.complete:
            record_backfill(store, selected)
    finally:
        store.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _training_partition(job: TrainingJob, failed: Path) -> Any:
    def run(batches: Iterator[Any]) -> Iterator[Any]:
        settings = job.settings
        registry = job_registry(job)
        columns = feature_columns(registry, job.contexts, job.signals)
        events: list[tuple[Event, Position]] = []
        labels: list[tuple[int, str, int]] = []
        deletions = Deletions()
        unpack = msgspec.json.Decoder(Event).decode
        for batch in batches:
            data = batch.to_pydict()
            for kind, user, ts, source, offset, payload, row in zip(
                data["kind"], data["user_id"], data["ts"], data["source"], data["offset"],
                data["payload"], data["row"], strict=True,
            ):  # fmt: skip
                if kind == _LABEL:
                    labels.append((row, user, ts))
                elif kind == _DELETE:
                    deletions.add(user, Position(source, offset))
                else:
                    events.append((unpack(payload), Position(source, offset)))
        lookups = open_lookup_store(settings, registry)
        try:
            parts = FeatureEngine.build(settings, registry, lookups)
            values = compute_features(parts, columns, deletions.kept(events), labels)
            _keep_failed(failed, parts.rejected)
            _keep_refused(failed, len(parts.refused))
        finally:
            if lookups is not None:
                lookups.close()
        yield from text_batches(values, _VALUE_BATCH_ROWS)

    return run


@raises_task_errors
def training_set_spark(spark: Any, inputs: TrainingInputs) -> TrainingSummary:
    """The training set on Spark (of ``inputs``, read before its JVM started): the executors
    write the values, sorted by label row, as Parquet parts beside the output; the driver
    streams them into the file."""
    from pyspark.sql import functions as f

    job, columns, table, labels = inputs.job, inputs.columns, inputs.table, inputs.labels
    shards = job.workers
    frame = archive_frame(spark, job.archive, job.settings, shards).cache()
    summary = TrainingSummary(
        rows=table.num_rows,
        rows_without_values=table.num_rows - len(labels),
        bad=_dead_letters(frame, job.dead_letter),
    )
    summary.events = frame.filter(f.col("kind") == _EVENT).count()
    summary.deletions = frame.filter(f.col("kind") == _DELETE).count()
    label_frame = spark.createDataFrame(_label_rows(labels, shards))
    users = label_frame.select("user_id").distinct()
    events = frame.filter(f.col("kind").isin(_EVENT, _DELETE)).join(
        f.broadcast(users), "user_id", "left_semi"
    )
    both = events.unionByName(label_frame, allowMissingColumns=True)
    names = ", ".join(f"{name} string" for name in value_names(len(columns)))
    job.out.parent.mkdir(parents=True, exist_ok=True)
    # Beside the output: a path the executors and the driver both reach.
    # Written by the executors (another user on a cluster, NFS's .nfs files): a cleanup's
    # error must not turn a training set already written into a traceback.
    parts_dir = temporary_directory(f".{job.out.name}.parts-", job.out.parent, True)
    with parts_dir as parts:
        with _failed_dir(job.out.parent) as failed:
            values = (
                both.repartition(shards, "shard")
                .sortWithinPartitions("user_id", "ts", "kind")
                .mapInArrow(_training_partition(job, failed), f"{ROW} long, {names}")
            )
            values.orderBy(ROW).write.mode("overwrite").parquet(parts)
            rejected = _failed_events(failed)
            summary.refused = _refused_values(failed)
        frame.unpersist()
        summary.signal_failed = len(rejected)
        if job.dead_letter is not None:  # after the archive's bad records, as locally
            DeadLetterFile(job.dead_letter).write(rejected)
        write_features(
            table, [(c.name, c.metadata) for c in columns], read_parts(Path(parts)), job.out
        )
    summary.seconds = time.perf_counter() - inputs.started
    return summary


@contextmanager
def _failed_dir(parent: Path) -> Iterator[Path]:
    """A directory for the partitions' ``signal_failed`` events (:func:`_keep_failed`) and
    refused values (:func:`_keep_refused`), in ``parent``: a path the executors and the
    driver both reach."""
    parent.mkdir(parents=True, exist_ok=True)
    with temporary_directory(".signal-failed-", parent, ignore_cleanup_errors=True) as directory:
        yield Path(directory)


def _keep_failed(directory: Path, rejected: list[BadEvent]) -> None:
    """A partition's events a signal failed on, for the driver to dead-letter and count
    (:func:`_failed_events`). A file named by the partition, replaced whole: a task that runs
    again (a retry, a speculative copy, the sampling pass of an ``orderBy``) computes the
    same events and replaces the file, so each is dead-lettered once."""
    if not rejected:
        return
    from pyspark import TaskContext

    context = TaskContext.get()
    if context is None:  # every partition would write the same file
        raise RuntimeError("signal failures kept outside a Spark task")
    path = directory / f"part-{context.partitionId():05d}.msgpack"
    scratch = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}")
    scratch.write_bytes(msgspec.msgpack.encode(rejected))
    os.replace(scratch, path)


def _keep_refused(directory: Path, refused: int) -> None:
    """How many of a partition's values the API's own rules refuse at their label's time
    (null in the file), for the driver to count as the local runner does: the command warns
    of them. A file per partition, replaced whole, as :func:`_keep_failed`'s."""
    if not refused:
        return
    _replace_partition_file(directory / f"refused-{_partition_id():05d}.txt", str(refused))


def _refused_values(directory: Path) -> int:
    return sum(int(path.read_text()) for path in directory.glob("refused-*.txt"))


def _partition_id() -> int:
    from pyspark import TaskContext

    context = TaskContext.get()
    if context is None:  # every partition would write the same file
        raise RuntimeError("a partition's file written outside a Spark task")
    return int(context.partitionId())


def _replace_partition_file(path: Path, text: str) -> None:
    scratch = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}")
    scratch.write_text(text)
    os.replace(scratch, path)


def _failed_events(directory: Path) -> list[BadEvent]:
    """Every partition's :func:`_keep_failed` events, in archive order (their positions)."""
    found: list[BadEvent] = []
    for path in directory.glob("part-*.msgpack"):
        found += msgspec.msgpack.decode(path.read_bytes(), type=list[BadEvent])
    return sorted(found, key=_archive_place)


def _archive_place(bad: BadEvent) -> tuple[str, int]:
    return ("", -1) if bad.position is None else (bad.position.partition, bad.position.offset)


def _label_rows(labels: list[Label], shards: int) -> Any:
    import pyarrow as pa

    return pa.table(
        {
            "shard": pa.array([shard_of(user, shards) for _, user, _ in labels], pa.int32()),
            "kind": pa.array([_LABEL] * len(labels), pa.int32()),
            "user_id": [user for _, user, _ in labels],
            "ts": pa.array([ts for _, _, ts in labels], pa.int64()),
            ROW: pa.array([row for row, _, _ in labels], pa.int64()),
        }
    )
