"""The quick-start job: generate the reference workload, load its items, replay, read back,
then serve the API over HTTP while fresh reference events keep flowing in.

Composes the public pieces the way a user would; the CLI's ``demo`` command calls it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from usersignals.aggregations.context import ReadContext
from usersignals.app import build_processor, build_spool_runner, open_store_reader
from usersignals.config import Settings, SpoolSettings, StoreSettings
from usersignals.durations import DAY_MS
from usersignals.enrich.tables import load_table
from usersignals.errors import ConfigurationError
from usersignals.ingest.dead_letter import DeadLetterFile
from usersignals.ingest.files import JsonlSource
from usersignals.ingest.live import feed_spool
from usersignals.ingest.synthetic import (
    WorkloadFiles,
    WorkloadSpec,
    write_workload,
)
from usersignals.processing.pipeline import PipelineStats
from usersignals.processing.replay import replay_file
from usersignals.processing.runner import SpoolRunner
from usersignals.serving.client import Client
from usersignals.serving.reader import UserSignals


@dataclass
class DemoResult:
    workload: WorkloadFiles
    items_loaded: int
    replay: PipelineStats
    samples: list[tuple[str, str, UserSignals]]  # (why this user, context, signals)


def workload_spec(events: int, seed: int, end_ms: int | None = None) -> WorkloadSpec:
    """A reference workload whose event times end at ``end_ms`` (default: now)."""
    base = WorkloadSpec(events=events, seed=seed)
    end = end_ms if end_ms is not None else time.time_ns() // 1_000_000
    return WorkloadSpec(events=events, seed=seed, start_ms=end - base.span_ms)


def run_demo(
    directory: Path,
    events: int,
    seed: int = 7,
    progress: Callable[[str, int, int], None] | None = None,
) -> DemoResult:
    """``progress(stage, done, total)`` is called as each stage advances."""
    spec = workload_spec(events, seed)
    workload = write_workload(
        spec,
        directory / "workload",
        progress=lambda n: progress("generate", n, events) if progress else None,
    )
    settings = Settings(store=StoreSettings(path=str(directory / "store")))
    processor = build_processor(settings)
    try:
        loaded = load_table(processor.store.table("items"), workload.items_path, key="item_id")
        source = JsonlSource(workload.events_path, block_size=settings.processing.batch_size)
        total = source.size_bytes
        with DeadLetterFile(directory / "dead-letter.jsonl") as dead_letters:
            summary = replay_file(
                source,
                processor.decoder,
                processor.engine,
                dead_letters,
                progress=lambda done: progress("replay", done, total) if progress else None,
            )
    finally:
        processor.close()

    reader = open_store_reader(settings)
    try:
        busiest = _busiest_user(workload)
        samples = [
            ("the busiest user, everything", "", reader.read(busiest, None, ReadContext())),
            (
                "the busiest user, saves and clicks on search in the last day, top 5",
                "window=1d actions=save,click surfaces=search limit=5",
                reader.read(
                    busiest,
                    ["recent_engagements", "action_counts", "category_interest"],
                    ReadContext(
                        window_ms=DAY_MS,
                        actions=frozenset({"save", "click"}),
                        surfaces=frozenset({"search"}),
                        limit=5,
                    ),
                ),
            ),
        ]
    finally:
        reader.store.close()
    return DemoResult(workload, loaded, summary, samples)


def _busiest_user(workload: WorkloadFiles) -> str:
    counts: dict[bytes, int] = {}
    with workload.events_path.open("rb") as handle:
        for line in handle:
            start = line.find(b'"user_id":"') + 11
            user = line[start : line.find(b'"', start)]
            counts[user] = counts.get(user, 0) + 1
    return max(counts, key=lambda user: counts[user]).decode()


@dataclass
class Pulse:
    """The featured user's live counts: events in the last hour, and the newest one's age."""

    events_last_hour: int
    age_ms: int | None


def pulse(client: Client, user_id: str) -> Pulse:
    """What the demo prints every few seconds, to show a user's signals moving."""
    counts = client.signals(user_id, ["action_counts"], window="1h").signals["action_counts"]
    return Pulse(int(counts.value["total"]), counts.age_ms)


@dataclass
class LiveService:
    """The running service of the demo: processor thread, server process, live producer."""

    base_url: str
    produced: list[int]  # one cell, updated by the producer thread
    runner: SpoolRunner


@contextmanager
def live_service(directory: Path, port: int, rate: int, seed: int) -> Iterator[LiveService]:
    """Serve the demo store over HTTP while fresh reference events flow in at ``rate``/s.

    ``seed`` is the replayed workload's: users are placed by the seed, so the live feed's
    busiest users are the replay's — the users the demo features get live events.

    The processor applies the spool in a thread of this process; the API runs as
    ``usersignals serve`` (granian) in its own process, reading the store as a RocksDB
    secondary — the same layout as a deployment, on one machine.
    """
    settings = Settings(
        store=StoreSettings(path=str(directory / "store")),
        spool=SpoolSettings(path=str(directory / "spool")),
    )
    processor = build_processor(settings)
    runner = build_spool_runner(processor)
    stop, feed_stop = threading.Event(), threading.Event()
    produced = [0]
    applying = threading.Thread(target=runner.run, args=(stop,), name="processor", daemon=True)
    feed = threading.Thread(
        target=feed_spool,
        args=(Path(settings.spool.path), rate, seed, feed_stop, produced),
        kwargs={"items": processor.store.table("items")},
        name="producer",
        daemon=True,
    )
    threads = [applying, feed] if rate else [applying]  # --rate 0: no live events
    server = _start_server(settings, port)
    base_url = f"http://127.0.0.1:{port}"
    try:
        for thread in threads:
            thread.start()
        with Client(base_url, timeout=1.0) as client:
            deadline = time.monotonic() + 30
            while server.poll() is not None or not client.ready():  # its own server, alive
                if server.poll() is not None or time.monotonic() > deadline:
                    raise ConfigurationError(f"the demo server did not start on port {port}")
                time.sleep(0.1)
        yield LiveService(base_url, produced, runner)
    finally:
        # What was fed or posted before the stop is applied before the processor closes:
        # the feed and the API first, then the processor, then what is left in the spool.
        feed_stop.set()
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
        if feed.ident is not None:  # started
            feed.join(timeout=15)
        stop.set()
        if applying.ident is not None:
            applying.join(timeout=15)
        if not applying.is_alive():
            _drain(runner)
        runner.close()  # its dead letters and the processor it took over


def _start_server(settings: Settings, port: int) -> subprocess.Popen[bytes]:
    """``usersignals serve`` of the demo's store and spool, in a process of its own."""
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "usersignals"),
            "serve",
            "--store", settings.store.path,
            "--spool", settings.spool.path,
            "--port", str(port),
        ],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


#: How many times the demo's stop reads the spool for events left in it (each read takes up
#: to a batch, 50,000 lines by default; a demo leaves a few hundred).
_DRAIN_READS = 20


def _drain(runner: SpoolRunner) -> None:
    """Apply what the spool still holds, in this thread (the processor's has ended)."""
    for _ in range(_DRAIN_READS):
        if not runner.run_once():
            return
