"""Where logged answers go: JSON-lines files, Parquet files, or a Kafka topic.

Every sink takes a record and its JSON line (:mod:`usersignals.serving.feature_log` encodes it
once) and never raises into the request that is being answered: a record it cannot write is
counted as failed (``usersignals_feature_log_records_total{outcome="failed"}``) and logged,
and the answer goes out as usual. A feature log is a sample for offline checks, not a ledger.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import msgspec
from prometheus_client import CollectorRegistry, Counter

from usersignals.config import LibrdkafkaValue
from usersignals.errors import ConfigurationError
from usersignals.optional_deps import require_pyarrow
from usersignals.serving.feature_records import FeatureLogRecord

logger = logging.getLogger(__name__)
_encoder = msgspec.json.Encoder()

#: Full Parquet buffers that may wait for the writer thread (see :class:`ParquetSink`).
PENDING_BUFFERS = 8


class LogCounts:
    """Records written and failed, per outcome; exported once a metrics registry is bound."""

    def __init__(self, sink: str) -> None:
        self.sink = sink
        self.written = 0
        self.failed = 0
        self._lock = threading.Lock()
        self._metric: Counter | None = None
        # A failure is logged at most once per interval: a broker outage must not flood logs.
        self._last_warning = -1e9

    def bind(self, registry: CollectorRegistry) -> None:
        self._metric = Counter(
            "usersignals_feature_log_records",
            "Answers handed to the feature log, by sink and outcome (written or failed)",
            ["sink", "outcome"],
            registry=registry,
        )
        self._metric.labels(self.sink, "written").inc(self.written)
        self._metric.labels(self.sink, "failed").inc(self.failed)

    def count_written(self, rows: int = 1) -> None:
        with self._lock:
            self.written += rows
        if self._metric is not None:
            self._metric.labels(self.sink, "written").inc(rows)

    def count_failed(self, rows: int, why: object) -> None:
        with self._lock:
            self.failed += rows
            now = time.monotonic()
            warn = now - self._last_warning >= 60
            if warn:
                self._last_warning = now
        if self._metric is not None:
            self._metric.labels(self.sink, "failed").inc(rows)
        if warn:
            logger.warning("feature log (%s): %d record(s) not written: %s", self.sink, rows, why)


class FeatureSink(Protocol):
    counts: LogCounts

    def write(self, record: FeatureLogRecord, line: bytes) -> None: ...

    def close(self) -> None: ...


def log_file_stem() -> str:
    """A name no other worker, and no earlier run of this one, has used in the directory."""
    started = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return f"features-{started}-{os.getpid()}"


class JsonlSink:
    """Appends each record as a line to ``features-<pid>.jsonl``: one file per worker, so
    workers never interleave partial lines. Flushed per line, not fsynced: a crash may lose
    the last few lines of a sample, never corrupt the ones before."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"features-{os.getpid()}.jsonl"
        self.counts = LogCounts("jsonl")
        # Unbuffered: a line is one write of its own. Through a buffer, a line that failed
        # (a full disk) stayed in it, counted failed, and the next flush wrote it after all;
        # and the close's flush raised at shutdown.
        self._file = self.path.open("ab", buffering=0)
        self._lock = threading.Lock()

    def write(self, record: FeatureLogRecord, line: bytes) -> None:
        data = line + b"\n"
        try:
            with self._lock:
                start = self._file.tell()
                written = self._file.write(data)
                if written != len(data):  # part of it (the disk filled up): taken back,
                    # or the next line, glued to the torn one, would be lost with it
                    self._file.truncate(start)
        except (OSError, ValueError) as exc:  # ValueError: written after close
            self.counts.count_failed(1, exc)
            return
        if written != len(data):
            self.counts.count_failed(1, f"{written} of {len(data)} bytes written")
            return
        self.counts.count_written()

    def close(self) -> None:
        with self._lock:
            self._file.close()  # nothing buffered: nothing to fail here


class ParquetSink:
    """Buffers up to ``buffer_rows`` records, then hands them to a writer thread, which writes
    them as a row group; after ``rows_per_file`` rows the file is finished and the next one
    started. The request that fills a buffer never waits for the disk.

    A file being written is named ``*.parquet.tmp`` and renamed to ``*.parquet`` when finished
    (its footer written): readers of the directory only ever see whole files. Memory is
    bounded: the buffer, :data:`PENDING_BUFFERS` full ones waiting for the writer (more are
    counted as failed, not held) and the one being written. A crash loses those and the
    unfinished file. Columns: ``user_id``, ``ts`` (timestamp, ms, UTC), ``params`` (map of
    strings) and ``signals`` (the answers as JSON text, as in a JSONL line: any JSON values).
    """

    @staticmethod
    def check_requirements() -> None:
        """pyarrow, or a clear error: checked by ``serve`` before its workers start, and at
        each worker's start (not at the first sampled answer)."""
        require_pyarrow("serving.feature_log_sink = 'parquet'")

    def __init__(self, directory: Path, buffer_rows: int, rows_per_file: int) -> None:
        self.check_requirements()
        import pyarrow as pa
        import pyarrow.parquet as pq

        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.buffer_rows = buffer_rows
        self.rows_per_file = rows_per_file
        self.counts = LogCounts("parquet")
        self.schema = pa.schema(
            [
                ("user_id", pa.string()),
                ("ts", pa.timestamp("ms", tz="UTC")),
                ("params", pa.map_(pa.string(), pa.string())),
                ("signals", pa.string()),
            ]
        )
        self._open = pq.ParquetWriter
        #: What a write can raise (disk full, directory gone...): counted, never raised.
        self._write_errors = (OSError, pa.ArrowException)
        self._stem = log_file_stem()
        self._files = 0
        self._writer: Any = None
        self._path: Path | None = None
        self._in_file = 0
        self._buffer: list[FeatureLogRecord] = []
        self._lock = threading.Lock()
        self._pending: queue.Queue[list[FeatureLogRecord] | None] = queue.Queue(PENDING_BUFFERS)
        self._writer_thread = threading.Thread(
            target=self._write_pending, name="feature-log-parquet", daemon=True
        )
        self._writer_thread.start()

    def write(self, record: FeatureLogRecord, line: bytes) -> None:
        with self._lock:
            self._buffer.append(record)
            if len(self._buffer) < self.buffer_rows:
                return
            rows, self._buffer = self._buffer, []
        try:
            self._pending.put_nowait(rows)
        except queue.Full:
            self.counts.count_failed(len(rows), "the writer is behind; a buffer was dropped")

    def close(self) -> None:
        """Write what is buffered, finish the file, stop the writer (a worker's shutdown)."""
        with self._lock:
            rows, self._buffer = self._buffer, []
        if rows:
            self._pending.put(rows)
        self._pending.put(None)
        self._writer_thread.join()

    def _write_pending(self) -> None:
        while (rows := self._pending.get()) is not None:
            try:
                self._write_rows(rows)
            except Exception:
                # Not an I/O error (those are counted below): a bug. The thread must live on,
                # or close() would wait on it forever; the rows are counted and it is logged.
                logger.exception("feature log: writing %d Parquet rows failed", len(rows))
                self.counts.count_failed(len(rows), "unexpected error")
                self._abandon("unexpected error")
        self._finish()

    def _write_rows(self, rows: list[FeatureLogRecord]) -> None:
        while rows:
            room = self.rows_per_file - self._in_file
            part, rows = rows[:room], rows[room:]
            try:
                self._write_group(part)
            except self._write_errors as exc:
                self.counts.count_failed(len(part) + len(rows), exc)
                self._abandon(exc)
                return
            if self._in_file >= self.rows_per_file:
                self._finish()

    def _write_group(self, rows: list[FeatureLogRecord]) -> None:
        import pyarrow as pa

        table = pa.Table.from_pydict(
            {
                "user_id": [record.user_id for record in rows],
                "ts": [record.ts for record in rows],
                "params": [list(record.params.items()) for record in rows],
                "signals": [_encoder.encode(record.signals).decode() for record in rows],
            },
            schema=self.schema,
        )
        if self._writer is None:
            self._files += 1
            self._path = self.directory / f"{self._stem}-{self._files:05d}.parquet.tmp"
            self._writer = self._open(self._path, self.schema)
        self._writer.write_table(table)
        self._in_file += len(rows)

    def _finish(self) -> None:
        """Close the current file and give it its final name. Its rows count as written only
        now: until its footer is written, a file cannot be read (a full disk at this point
        lost rows the count had already called written)."""
        if self._writer is None or self._path is None:
            return
        try:
            self._writer.close()
        except self._write_errors as exc:
            self._abandon(exc)
            return
        try:
            self._path.rename(self._path.with_suffix(""))
        except OSError as exc:  # the file is whole (its footer written): kept, as .tmp
            logger.warning("feature log file %s could not be renamed: %s", self._path, exc)
        self.counts.count_written(self._in_file)
        self._writer, self._path, self._in_file = None, None, 0

    def _abandon(self, why: object) -> None:
        """After a failed write the file cannot be read (it has no footer): its rows are
        counted failed, it is deleted (an empty ``.tmp`` was left behind per failed buffer
        on a full disk), and the next rows start a new one."""
        if self._writer is not None:
            try:
                self._writer.close()
            except self._write_errors:  # already failing; the rows are counted below
                logger.debug("closing a failed feature log file", exc_info=True)
        if self._in_file:
            self.counts.count_failed(self._in_file, why)
        if self._path is not None:
            self._path.unlink(missing_ok=True)
        self._writer, self._path, self._in_file = None, None, 0


class KafkaSink:
    """Produces each record (its JSON line, keyed by user id) to ``topic``.

    Never waits on the broker in a request: a record the producer cannot queue (its queue is
    full, the broker long gone) or that the broker does not acknowledge within
    ``message.timeout.ms`` is counted as failed. Delivery reports are served on the next
    record and at close, which waits up to ``close_timeout_s`` for what is still queued.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        producer: Mapping[str, LibrdkafkaValue],
        close_timeout_s: float = 5.0,
    ) -> None:
        from confluent_kafka import KafkaException, Producer

        from usersignals.ingest.kafka import librdkafka_settings
        from usersignals.ingest.kafka_logging import client_logger

        self.topic = topic
        self.close_timeout_s = close_timeout_s
        self.counts = LogCounts("kafka")
        config = {
            "bootstrap.servers": bootstrap_servers,
            # Sampled answers, batched: throughput over latency, bounded memory.
            "linger.ms": 100,
            "queue.buffering.max.messages": 100_000,
            "message.timeout.ms": 30_000,
            "logger": client_logger(),
            **librdkafka_settings(producer),
        }
        try:
            self._producer = Producer(config)
        except KafkaException as exc:  # an unknown or invalid property
            raise ConfigurationError(f"kafka.producer: {exc.args[0].str()}") from exc

    def write(self, record: FeatureLogRecord, line: bytes) -> None:
        from confluent_kafka import KafkaException

        try:
            self._producer.produce(
                self.topic, key=record.user_id.encode(), value=line, on_delivery=self._delivered
            )
        except (BufferError, KafkaException) as exc:
            self.counts.count_failed(1, exc)
        self._producer.poll(0)

    def _delivered(self, error: Any, message: Any) -> None:
        if error is None:
            self.counts.count_written()
        else:
            self.counts.count_failed(1, error)

    def close(self) -> None:
        undelivered = self._producer.flush(self.close_timeout_s)
        if undelivered:
            self.counts.count_failed(undelivered, "not acknowledged before the worker stopped")
