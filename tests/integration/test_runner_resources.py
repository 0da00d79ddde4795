"""Each runner owns what the composition root opened for it, and closes it on the way out.

The observable: RocksDB's lock. While a runner holds its store, opening the same directory
again fails; once the runner has stopped or failed, it opens. Real RocksDB on a temp dir,
real spool files; the Kafka runner's consumer points at a closed loopback port (it never
needs a broker here: it is stopped before it fetches).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from usersignals.app import build_kafka_runner, build_processor, build_spool_runner
from usersignals.config import KafkaSettings, Settings, SpoolSettings, StoreSettings
from usersignals.errors import StoreError
from usersignals.ingest.spool import SpoolWriter
from usersignals.processing.metrics import ProcessorMetrics
from usersignals.state.rocks import RocksStore

EVENT = (
    b'{"event_id":"e1","user_id":"u1","item_id":"i1","action":"click","surface":"home",'
    b'"ts":1700000000000}'
)


def settings_in(root: Path, **more: object) -> Settings:
    return Settings(
        store=StoreSettings(path=str(root / "store")),
        spool=SpoolSettings(path=str(root / "spool")),
        **more,  # type: ignore[arg-type]
    )


def store_is_released(path: Path) -> bool:
    """Whether nothing in this process holds the store open (RocksDB's lock is free)."""
    try:
        RocksStore(path).close()
    except StoreError:
        return False
    return True


def test_the_spool_runner_closes_its_store_when_it_stops(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    writer = SpoolWriter(Path(settings.spool.path), "worker-1")
    writer.append([EVENT, b"not json"])
    writer.close()
    with build_spool_runner(build_processor(settings)) as runner:
        assert not store_is_released(tmp_path / "store")
        stop = threading.Event()
        assert runner.run_once() == 2
        stop.set()
        runner.run(stop)
    assert runner.stats.report.events == 1
    assert runner.stats.bad_by_reason == {"malformed_json": 1}
    assert store_is_released(tmp_path / "store")


def test_the_spool_runner_closes_its_store_when_it_fails(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    spool = Path(settings.spool.path)
    # A directory where a spool file should be: reading it fails, as a bug would.
    (spool / "broken.jsonl").mkdir(parents=True)
    runner = build_spool_runner(build_processor(settings))
    with pytest.raises(IsADirectoryError), runner:
        runner.run(threading.Event())
    assert store_is_released(tmp_path / "store")


def test_the_kafka_runner_closes_its_consumer_and_store_when_it_stops(tmp_path: Path) -> None:
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:9", topic="t", session_timeout_ms=6000)
    processor = build_processor(settings_in(tmp_path, kafka=kafka))
    stop = threading.Event()
    stop.set()  # a SIGTERM before the first fetch: nothing in flight, nothing to commit
    with build_kafka_runner(processor, ProcessorMetrics()) as runner:
        runner.run(stop)
    assert store_is_released(tmp_path / "store")
    with pytest.raises(RuntimeError, match="closed"):
        runner.source.next_batch()
