"""Feature logging: a sampled record of what the API answered, for the online/offline
consistency check (``usersignals consistency``) and for training on served values.

A record holds the user, the request's time ("now" of the view), its query parameters, and
each signal's version and value as served. Where records go is a setting
(``serving.feature_log_sink``, :mod:`usersignals.serving.feature_sinks`): JSON lines or Parquet
files in ``serving.feature_log_path`` (a file of its own per worker), or a Kafka topic
(``serving.feature_log_topic``, one JSON line per message, keyed by user). Logging never fails
a request: what a sink cannot write is counted and logged.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path

import msgspec
from prometheus_client import CollectorRegistry

from usersignals.config import Settings
from usersignals.errors import ConfigurationError, InvalidSettingError
from usersignals.optional_deps import require_pyarrow
from usersignals.serving.feature_records import FeatureLogRecord, LoggedAnswer
from usersignals.serving.feature_sinks import FeatureSink, JsonlSink, KafkaSink, ParquetSink
from usersignals.serving.reader import UserSignals

__all__ = [
    "FeatureLog",
    "FeatureLogRecord",
    "LoggedAnswer",
    "build_sink",
    "read_feature_log",
]

_encoder = msgspec.json.Encoder()


class FeatureLog:
    """Hands a sampled share (``rate``, 0 to 1) of answers to ``sink``."""

    def __init__(self, sink: FeatureSink, rate: float, seed: int | None = None) -> None:
        self.sink = sink
        self.rate = rate
        self._random = random.Random(seed)

    def bind_metrics(self, registry: CollectorRegistry) -> None:
        self.sink.counts.bind(registry)

    def sampled(self) -> bool:
        return self.rate >= 1.0 or (self.rate > 0.0 and self._random.random() < self.rate)

    def record(self, params: Mapping[str, str], now_ms: int, answer: UserSignals) -> None:
        signals = {
            label: LoggedAnswer(result.name, result.version, result.value, result.newest_event_ms)
            for label, result in answer.signals.items()
        }
        record = FeatureLogRecord(answer.user_id, now_ms, dict(params), signals)
        self.sink.write(record, _encoder.encode(record))

    def close(self) -> None:
        self.sink.close()

    @staticmethod
    def close_if_any(log: FeatureLog | None) -> None:
        """Close ``log`` when there is one: a worker's shutdown, logging configured or not."""
        if log is not None:
            log.close()


def build_sink(settings: Settings) -> FeatureSink | None:
    """The configured sink, or None when feature logging is off (no path / topic, or rate 0).

    Settings were checked when loaded (:meth:`Settings.load`); the sink's own requirements
    (pyarrow for Parquet) are checked here, at the worker's start.
    """
    serving = settings.serving
    if serving.feature_log_rate == 0:
        return None
    if serving.feature_log_sink == "kafka":
        servers = serving.feature_log_bootstrap_servers or settings.kafka.bootstrap_servers
        return KafkaSink(servers, serving.feature_log_topic, settings.kafka.producer)
    if not serving.feature_log_path:
        return None
    directory = Path(serving.feature_log_path)
    if serving.feature_log_sink == "parquet":
        return ParquetSink(
            directory, serving.feature_log_buffer_rows, serving.feature_log_rows_per_file
        )
    return JsonlSink(directory)


def check_feature_log_sink(settings: Settings) -> None:
    """Refuse, before any worker starts, a sink that cannot work: every worker builds its
    own at start, and one that raised there crashed them all in a loop (a sampled log took
    the API down). A directory it cannot create or write; a producer setting librdkafka
    does not know."""
    serving = settings.serving
    if serving.feature_log_rate == 0:
        return
    if serving.feature_log_sink == "kafka":
        servers = serving.feature_log_bootstrap_servers or settings.kafka.bootstrap_servers
        KafkaSink(servers, serving.feature_log_topic, settings.kafka.producer).close()
        return
    if not serving.feature_log_path:
        return
    if serving.feature_log_sink == "parquet":
        ParquetSink.check_requirements()
    directory = Path(serving.feature_log_path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        writable = os.access(directory, os.W_OK | os.X_OK)
    except OSError:
        writable = False
    if not writable:
        allowed = "a directory this process can create and write"
        raise InvalidSettingError("serving.feature_log_path", serving.feature_log_path, allowed)


def read_feature_log(path: Path, unreadable: list[str] | None = None) -> list[FeatureLogRecord]:
    """Every record of a log file, or of every ``*.jsonl`` and ``*.parquet`` file of a log
    directory (a Parquet file still being written, ``*.parquet.tmp``, is not read).

    A JSONL line that is no record (a last line cut short by a crash, say) is skipped and
    named in ``unreadable`` (``FILE:LINE: reason``), and so are a Parquet file that cannot
    be read (``FILE: reason``: a copy cut short) and a Parquet row whose answers are not
    JSON (``FILE:ROW: reason``, rows counted from 1); without that list, each is an error."""
    if path.is_dir():
        files = sorted([*path.glob("*.jsonl"), *path.glob("*.parquet")])
    elif path.exists():
        files = [path]
    else:
        raise ConfigurationError(f"no feature log at {str(path)!r}")
    records: list[FeatureLogRecord] = []
    for file in files:
        if file.suffix == ".parquet":
            records.extend(_parquet_records(file, unreadable))
        else:
            records.extend(_jsonl_records(file, unreadable))
    return records


def _jsonl_records(file: Path, unreadable: list[str] | None) -> list[FeatureLogRecord]:
    decoder = msgspec.json.Decoder(FeatureLogRecord)
    records: list[FeatureLogRecord] = []
    for number, line in enumerate(file.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(decoder.decode(line))
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # (a ValidationError too)
            if unreadable is None:
                where = f"feature log {str(file)!r}, line {number}"
                raise ConfigurationError(f"{where}: {exc}") from None
            unreadable.append(f"{file.name}:{number}: {exc}")
    return records


def _parquet_records(file: Path, unreadable: list[str] | None) -> list[FeatureLogRecord]:
    require_pyarrow(f"reading the Parquet feature log {str(file)!r}")
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(file, columns=["user_id", "ts", "params", "signals"])
    except (OSError, pa.ArrowException) as exc:
        if unreadable is None:
            raise ConfigurationError(f"cannot read the feature log {str(file)!r}: {exc}") from exc
        unreadable.append(f"{file.name}: {exc}")
        return []
    times = table.column("ts").cast(pa.int64()).to_pylist()
    signals = msgspec.json.Decoder(dict[str, LoggedAnswer])
    records: list[FeatureLogRecord] = []
    rows = zip(
        table.column("user_id").to_pylist(),
        times,
        table.column("params").to_pylist(),
        table.column("signals").to_pylist(),
        strict=True,
    )
    for number, (user, ts, params, answers) in enumerate(rows, start=1):
        try:
            records.append(FeatureLogRecord(user, ts, dict(params), signals.decode(answers)))
        except msgspec.DecodeError as exc:  # (a ValidationError too)
            if unreadable is None:
                where = f"feature log {str(file)!r}, row {number}"
                raise ConfigurationError(f"{where}: {exc}") from None
            unreadable.append(f"{file.name}:{number}: {exc}")
    return records
