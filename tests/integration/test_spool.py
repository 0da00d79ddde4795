"""The HTTP spool: every acknowledged line is applied once, whatever happens to its file.

Real RocksDB on a temp dir, real files; the processor is the real ``SpoolRunner``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from usersignals import Event, ReadContext, RocksStore, SignalRegistry
from usersignals.events.decode import EventDecoder
from usersignals.ingest.dead_letter import DeadLetterFile
from usersignals.ingest.spool import SpoolReader, SpoolWriter
from usersignals.processing.engine import Engine
from usersignals.processing.runner import SpoolRunner
from usersignals.serving.reader import SignalReader
from usersignals.state.keys import META_PREFIX

_encode = msgspec.json.Encoder().encode
NOW = time.time_ns() // 1_000_000


@pytest.fixture
def registry(tmp_path: Path) -> SignalRegistry:
    module = tmp_path / "spool_signals.py"
    module.write_text(
        "from usersignals import Count, Signal\n"
        "clicks = Signal(name='clicks', version=1, aggregate=Count())\n"
    )
    return SignalRegistry.from_module(str(module))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RocksStore]:
    opened = RocksStore(tmp_path / "store")
    yield opened
    opened.close()


def runner_for(registry: SignalRegistry, store: RocksStore, spool: Path) -> SpoolRunner:
    return SpoolRunner(
        Engine(registry, store),
        EventDecoder(),
        SpoolReader(spool),
        DeadLetterFile(spool.parent / "dead" / "processor.jsonl"),
    )


def events(prefix: str, count: int, users: int = 10) -> list[bytes]:
    return [
        _encode(Event(f"{prefix}-{i}", f"u{i % users}", "i1", "click", "home", NOW))
        for i in range(count)
    ]


def applied(registry: SignalRegistry, store: RocksStore, users: int = 10) -> int:
    reader = SignalReader(registry, store)
    context = ReadContext(window_ms=86_400_000, now_ms=NOW + 1)
    answers = reader.read_many([f"u{i}" for i in range(users)], ["clicks"], context)
    return sum(answer.signals["clicks"].value["total"] for answer in answers)


def test_a_writer_name_reused_after_the_file_was_removed_loses_nothing(
    registry: SignalRegistry, store: RocksStore, tmp_path: Path
) -> None:
    """Containers reuse process ids: the same writer name must never hide a new file."""
    spool = tmp_path / "spool"
    runner = runner_for(registry, store, spool)
    first = SpoolWriter(spool, "worker-1")
    first.append(events("a", 1_000))
    first.close()
    runner.run_once()
    assert applied(registry, store) == 1_000
    for path in spool.glob("*.jsonl"):  # an operator tidies up processed files
        path.unlink()

    second = SpoolWriter(spool, "worker-1")  # pid 1 again, in the next container
    second.append(events("b", 1_000))
    second.close()
    runner.run_once()
    assert applied(registry, store) == 2_000


def test_a_torn_last_line_does_not_cost_the_next_writer_its_first_event(
    registry: SignalRegistry, store: RocksStore, tmp_path: Path
) -> None:
    """A writer SIGKILLed mid-line leaves a torn tail; a writer of the same name follows."""
    spool = tmp_path / "spool"
    crashed = SpoolWriter(spool, "worker-7")
    crashed.append(events("a", 100))
    torn = events("torn", 1)[0]
    with crashed.path.open("ab") as handle:  # what a kill between two write calls leaves
        handle.write(torn[: len(torn) // 2])
    crashed.close()

    restarted = SpoolWriter(spool, "worker-7")
    restarted.append(events("b", 1))  # acknowledged: must be applied
    restarted.close()
    runner = runner_for(registry, store, spool)
    runner.run_once()
    runner.run_once()
    assert applied(registry, store) == 101
    assert runner.dead_letters.count == 0


def test_fully_applied_files_are_deleted_with_their_progress_key(
    registry: SignalRegistry, store: RocksStore, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    runner = runner_for(registry, store, spool)
    open_writer = SpoolWriter(spool, "live")
    closed_writer = SpoolWriter(spool, "gone")
    open_writer.append(events("a", 50))
    closed_writer.append(events("b", 50))
    closed_writer.close()
    runner.run_once()
    runner.run_once()
    assert applied(registry, store) == 100
    # The closed writer's file is applied and retired; the open one stays, with one
    # progress key of its own.
    assert [p.name for p in spool.glob("*.jsonl")] == [open_writer.path.name]
    marks = [key for key, _ in store.scan(META_PREFIX) if b"spool" in key]
    assert len(marks) == 1
    assert open_writer.path.stem.encode() in marks[0]

    open_writer.append(events("c", 10))
    open_writer.close()
    runner.run_once()
    runner.run_once()
    assert applied(registry, store) == 110
    assert list(spool.glob("*.jsonl")) == []
    assert [key for key, _ in store.scan(META_PREFIX) if b"spool" in key] == []


def test_a_restarted_processor_resumes_from_each_files_progress_key(
    registry: SignalRegistry, store: RocksStore, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    writer = SpoolWriter(spool, "w")
    writer.append(events("a", 30))
    runner_for(registry, store, spool).run_once()
    writer.append(events("b", 20))
    writer.close()
    again = runner_for(registry, store, spool)
    again.run_once()
    again.run_once()
    assert applied(registry, store) == 50
    assert again.stats.lines == 20
    assert list(spool.glob("*.jsonl")) == []


def test_an_event_accepted_by_another_worker_before_a_delete_never_survives_it(
    registry: SignalRegistry, store: RocksStore, tmp_path: Path
) -> None:
    """Worker B accepts a deletion after worker A acknowledged u1's events; the processor
    happens to read B's file first. A's earlier events must not bring u1 back; u1's events
    accepted after the deletion count."""
    spool = tmp_path / "spool"
    worker_a = SpoolWriter(spool, "b-worker")  # sorts after worker B's file
    worker_b = SpoolWriter(spool, "a-worker")
    worker_a.append(events("before", 30, users=1))  # all for u0
    worker_b.delete_user("u0")
    worker_a.append(events("after", 4, users=1))
    runner = runner_for(registry, store, spool)
    runner.run_once()
    runner.run_once()
    assert runner.stats.deleted_users == 1
    reader = SignalReader(registry, store)
    context = ReadContext(window_ms=86_400_000, now_ms=NOW + 1)
    assert reader.read("u0", ["clicks"], context).signals["clicks"].value["total"] == 4
    worker_a.close()
    worker_b.close()


def test_the_processor_metrics_count_what_the_spool_runner_applies(
    registry: SignalRegistry, store: RocksStore, tmp_path: Path
) -> None:
    """As the Kafka runner's: events applied, batches, freshness, dead letters (a new
    user's report: in spool mode, the default `run`, they all stayed at zero)."""
    from prometheus_client import CollectorRegistry

    from usersignals.processing.metrics import ProcessorMetrics
    from usersignals.processing.store_retry import StoreRetry

    spool = tmp_path / "spool"
    collected = CollectorRegistry()
    metrics = ProcessorMetrics(collected)
    runner = SpoolRunner(
        Engine(registry, store),
        EventDecoder(),
        SpoolReader(spool),
        DeadLetterFile(tmp_path / "dead" / "processor.jsonl"),
        retry=StoreRetry(metrics=metrics),
    )
    writer = SpoolWriter(spool, "worker-1")
    writer.append([*events("m", 30), b'{"not": "an event"}'])
    writer.close()
    runner.run_once()
    assert applied(registry, store) == 30
    value = collected.get_sample_value
    assert value("usersignals_events_processed_total") == 30
    assert value("usersignals_batch_events_count") == 1
    assert (value("usersignals_freshness_seconds_count") or 0) >= 1  # sampled
    assert value("usersignals_batch_seconds_count") == 1
    dead = [
        sample.value
        for metric in collected.collect()
        if metric.name == "usersignals_dead_letters"
        for sample in metric.samples
        if sample.name.endswith("_total")
    ]
    assert dead == [1]
