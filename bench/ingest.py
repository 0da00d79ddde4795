"""Ingest from Kafka: bare consumer vs usersignals vs Quix Streams, Pathway and Bytewax.

Method, in one run, against a local Kafka-protocol broker (Tansu) on 127.0.0.1:
1. produce N reference events (keyed by user id, 6 partitions) and write their item table;
2. the bare consumer: confluent-kafka reads the topic (new group), events/s from the first
   message to the last — the ceiling;
3. usersignals (KafkaRunner: decode, enrich, five reference signals, RocksDB, commits)
   consumes the same topic with a new group: events/s from the first batch to the last;
4. Quix Streams, Pathway and Bytewax each compute the same five signals (one shared fold,
   bench/reference_signals.py, in each framework's per-key state; the item table in memory)
   from the same topic, each in its own venv with pinned versions (bench/.venv-quix,
   bench/.venv-pathway, bench/.venv-bytewax, created on first use), one process, one worker:
   events/s from the first message to the last event folded (Pathway, which reports per
   batch: from the end of its first batch, without that batch's events, as usersignals);
5. freshness: usersignals consumes a live topic fed at half of its rate with events stamped
   now (another seed's reference events, encoded before the feed starts, with their item
   table: :class:`Feed`); once the processor has joined and caught up with the feed (its
   group's committed offsets within 0.5 s of the feed's events: :func:`wait_until_caught_up`),
   a probe event for a new user is produced every 50 ms after the last one was seen, and a
   reader in this process (a RocksDB secondary refreshed every 100 ms, as a serving worker)
   polls until the probe is visible; p50/p99 of produce → visible.

    .venv/bin/python bench/ingest.py --events 300000
    .venv/bin/python bench/ingest.py --events 300000 --skip pathway --skip bytewax
"""

from __future__ import annotations

import argparse
import atexit
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
from confluent_kafka import Consumer, Producer, TopicPartition

from usersignals.aggregations.context import ReadContext
from usersignals.app import build_kafka_runner, build_processor
from usersignals.config import KafkaSettings, Settings, StoreSettings
from usersignals.demo import workload_spec
from usersignals.devtools.broker import LocalBroker
from usersignals.enrich.tables import load_table
from usersignals.ingest.kafka import create_topic
from usersignals.ingest.kafka_produce import produce_workload
from usersignals.ingest.synthetic import item_records, iter_event_chunks
from usersignals.malloc_tuning import return_large_blocks
from usersignals.processing.gc_tuning import tune_collector
from usersignals.processing.metrics import ProcessorMetrics
from usersignals.serving.reader import SignalReader
from usersignals.signals.registry import SignalRegistry
from usersignals.state.rocks import RocksStore

HERE = Path(__file__).resolve().parent
PARTITIONS = 6


def bare_consumer(bootstrap: str, topic: str, total: int) -> float:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bare-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "fetch.queue.backoff.ms": 10,
        }
    )
    consumer.subscribe([topic])
    count, first = 0, 0.0
    while count < total:
        messages = consumer.consume(10_000, 1.0)
        if messages and not first:
            first = time.perf_counter()
        count += sum(1 for m in messages if m.error() is None)
    seconds = time.perf_counter() - first
    consumer.close()
    return total / seconds


def usersignals_rate(root: Path, bootstrap: str, topic: str, items: Path, total: int) -> float:
    settings = Settings(
        store=StoreSettings(path=str(root / "store-b")),
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap, topic=topic, group_id=f"us-{time.time_ns()}",
            session_timeout_ms=6000, dead_letter_topic=f"{topic}.dead",
        ),
    )  # fmt: skip
    return_large_blocks()  # as `usersignals run` does before its store opens
    processor = build_processor(settings)
    load_table(processor.store.table("items"), items, key="item_id")
    runner = build_kafka_runner(processor, ProcessorMetrics())
    tune_collector()  # as `usersignals run` does once the processor is built
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,))
    thread.start()
    first, first_events = 0.0, 0
    while runner.stats.report.events + runner.stats.bad < total:
        if not first and runner.stats.batches:
            first = time.perf_counter()  # end of the first batch: join time excluded
            first_events = runner.stats.report.events
        time.sleep(0.01)
    seconds = time.perf_counter() - first
    stop.set()
    thread.join()
    runner.close()  # the consumer, the dead-letter producer and the processor it took over
    if not first:  # timed from the end of the first batch, so it needs a second one
        sys.exit(f"usersignals took all {total:,} events in its first batch: use more --events")
    return (total - first_events) / seconds


@dataclass(frozen=True)
class Framework:
    """Another stream processor computing the reference signals, in a venv of its own."""

    name: str
    label: str
    packages: tuple[str, ...]  # pinned: the figures are for these versions
    script: str

    @property
    def venv(self) -> Path:
        return HERE / f".venv-{self.name}"


FRAMEWORKS = (
    # Quix's confluent-kafka pin differs from ours, hence venvs of their own.
    Framework("quix", "Quix Streams 3.28.1", ("quixstreams==3.28.1",), "quix_reference.py"),
    Framework("pathway", "Pathway 0.33.0", ("pathway==0.33.0",), "pathway_reference.py"),
    Framework(
        "bytewax",
        "Bytewax 0.21.1",
        ("bytewax==0.21.1", "confluent-kafka==2.16.1"),
        "bytewax_reference.py",
    ),
)


def ensure_venv(framework: Framework) -> Path:
    """The framework's python, its venv created (or brought to the pins) on first use."""
    python = framework.venv / "bin" / "python"
    marker = framework.venv / "installed.txt"
    wanted = "\n".join(framework.packages)
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    print(f"creating bench/.venv-{framework.name} ({', '.join(framework.packages)}) ...")
    subprocess.run([sys.executable, "-m", "venv", str(framework.venv)], check=True)
    pip = [str(framework.venv / "bin" / "pip"), "install", "-q", *framework.packages]
    subprocess.run(pip, check=True)
    marker.write_text(wanted)
    return python


def framework_rate(
    framework: Framework, root: Path, bootstrap: str, topic: str, items: Path, total: int
) -> float | None:
    python = ensure_venv(framework)
    result = subprocess.run(
        [str(python), str(HERE / framework.script), bootstrap, topic, str(total), str(items),
         str(root / f"{framework.name}-state")],
        capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    if result.returncode != 0:
        print(f"{framework.name} failed: {result.stderr[-2000:]}")
        return None
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    if int(figures["events"]) != total:
        print(f"{framework.name} folded {figures['events']} events of {total}")
        return None
    # "timed_events": those after the first batch, for a job timed from the end of it.
    timed = int(figures.get("timed_events", total))
    if timed <= 0:
        print(f"{framework.name} took all {total:,} events in its first batch: use more --events")
        return None
    return timed / float(figures["seconds"])


#: Seconds a freshness probe is waited for before the next one goes.
PROBE_GIVE_UP_S = 10.0
#: Seconds the freshness feed runs before the processor is asked whether it caught up:
#: the group join and warm-up.
FRESHNESS_WARM_UP_S = 8
#: Caught up: the group's committed offsets within this many seconds of the feed's events.
CAUGHT_UP_S = 0.5
#: Seconds the catch-up is waited for at most; past it the probes begin anyway (and the
#: run says so: its figures then measure a processor still behind).
CATCH_UP_LIMIT_S = 60.0
#: The time every feed event is encoded with, stamped with the time of its send instead
#: (13 digits, as every time in ms from 2001 to 2286).
_PLACEHOLDER_MS = 1_000_000_000_000
_PLACEHOLDER_TS = b'"ts":%d' % _PLACEHOLDER_MS
#: Seconds of events the feed holds; it sends them over again, round after round, for as
#: long as the step runs (the catch-up's length is not known beforehand).
FEED_ROUND_S = 20
#: The freshness processor's store, under the feed's directory.
FEED_STORE = "store-f"
#: How every feed event's id begins (the seed's), made another in each round after the
#: first: the same id twice is dropped by the users' de-duplication, less work than an event.
_FEED_ID = b'"event_id":"e21-'


@dataclass(frozen=True)
class Feed:
    """The freshness feed's events, (key, JSON value), encoded before the run with a
    placeholder time (:data:`_PLACEHOLDER_TS`), which the feeder replaces with the time of
    each send, and the item table of their items. The feeder sends them round after round,
    each round's event ids its own (:data:`_FEED_ID`).

    Why encoded ahead: generating and encoding an event took 6.4 µs of this process's CPU
    (4.9 µs of it generating), a third of a core at 50,000 events/s, taken from the
    processor under test on a 2-core machine; stamping a ready one takes a bytes replace.
    The price is memory: 1.2 GB in this process at 70,000 events/s (RSS grown, 2.66 M
    events), so the feed holds :data:`FEED_ROUND_S` seconds of events and sends them again.
    Why its own items: the feed is another seed's workload, whose items are others; with
    the throughput topic's table, 99.4 % of its events found no item, a lighter workload
    than the one whose rate it runs at half of (the engine took 300,000 events at 127,000
    events/s without items, 92,000 with them)."""

    events: list[tuple[bytes, bytes]]
    items: Path


def encoded_feed(root: Path, rate: float, seconds: float) -> Feed:
    spec = workload_spec(10**9, seed=21)
    encoder = msgspec.json.Encoder()
    wanted = int(rate * seconds)
    events: list[tuple[bytes, bytes]] = []
    ids: set[str] = set()
    for chunk in iter_event_chunks(spec, chunk_size=10_000):
        for event in chunk[: wanted - len(events)]:
            ids.add(str(event["item_id"]))
            event["ts"] = _PLACEHOLDER_MS
            value = encoder.encode(event)
            if _FEED_ID not in value:  # each round's ids are made from it
                raise RuntimeError(f"a feed event without the id prefix {_FEED_ID!r}: {value!r}")
            events.append((str(event["user_id"]).encode(), value))
        if len(events) >= wanted:
            break
    items = root / "feed-items.jsonl"
    items.write_bytes(encoder.encode_lines(list(item_records(spec, sorted(ids)))))
    return Feed(events, items)


@dataclass(frozen=True)
class FreshnessRun:
    """What the freshness step saw beside its latencies: the feed's events, over seconds
    (from its start to the end of the probes), and the probes it gave up on."""

    events: int
    seconds: float
    #: Probes not visible within PROBE_GIVE_UP_S (counted at that time in the figures).
    late_probes: int
    #: Seconds from the feed's start until the first probe.
    catch_up_s: float
    #: Whether the processor had caught up by then (else :data:`CATCH_UP_LIMIT_S` passed).
    caught_up: bool


def wait_until_caught_up(
    bootstrap: str, topic: str, group: str, rate: float, produced: Callable[[], int]
) -> tuple[float, bool]:
    """Until ``group``'s committed offsets on ``topic`` (a topic of this step's alone) are
    within :data:`CAUGHT_UP_S` of the ``produced()`` events, or :data:`CATCH_UP_LIMIT_S`
    passed; returns when it ended, and whether the processor had caught up.

    Why: the processor joins its group seconds into the feed and then works off the events
    produced meanwhile, in batches of up to 100,000. A probe sent during that catch-up
    measures the start-up, not the freshness of a processor keeping up with the stream:
    measured at 60,000 events/s, the first probes took 2-4 s, the ones after 0.3-0.5 s.
    (The events produced, not the high watermarks: the test broker reports those low.)"""
    watcher = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                        "enable.auto.commit": False})  # fmt: skip
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    deadline = time.monotonic() + CATCH_UP_LIMIT_S
    try:
        while time.monotonic() < deadline:
            committed = sum(max(p.offset, 0) for p in watcher.committed(partitions, timeout=5))
            if produced() - committed <= rate * CAUGHT_UP_S:
                return time.monotonic(), True
            time.sleep(0.25)
    finally:
        watcher.close()
    return time.monotonic(), False


def start_processor(
    root: Path, bootstrap: str, topic: str, feed: Feed, metrics_port: int = 0
) -> subprocess.Popen[bytes]:
    """``usersignals run`` on a store holding the feed's items, in its own process, as
    deployed (not sharing this process's GIL); its metrics served on ``metrics_port`` (0:
    none)."""
    store = root / FEED_STORE
    table_store = RocksStore(store)
    load_table(table_store.table("items"), feed.items, key="item_id")
    table_store.close()
    env = {
        **os.environ,
        "USERSIGNALS_KAFKA__GROUP_ID": "fresh",
        "USERSIGNALS_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "USERSIGNALS_KAFKA__BATCH_MAX_WAIT_MS": "100",
        "USERSIGNALS_KAFKA__DEAD_LETTER_TOPIC": "fresh.dead",
    }
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "usersignals"), "run", "--kafka", bootstrap,
         "--topic", topic, "--store", str(store), "--metrics-port", str(metrics_port)],
        env=env, stderr=subprocess.DEVNULL,
    )  # fmt: skip


class Feeder(threading.Thread):
    """Sends the feed at ``rate``, round after round (each round's ids its own), each event
    stamped with the time of its send, until stopped; a failure is kept for the run."""

    def __init__(self, producer: Producer, topic: str, feed: Feed, rate: float) -> None:
        super().__init__()
        self.producer, self.topic, self.feed, self.rate = producer, topic, feed, rate
        self.stopping = threading.Event()
        self.sent = 0  # the feed's events produced, for the rate it reached
        self.failed: BaseException | None = None

    def run(self) -> None:
        started = time.monotonic()
        step = max(int(self.rate) // 20, 1)
        events = self.feed.events
        try:
            for round_ in itertools.count():
                ids = _FEED_ID.replace(b"-", b".%d-" % round_) if round_ else _FEED_ID
                for start in range(0, len(events), step):
                    if self.stopping.is_set():
                        return
                    now = b'"ts":%d' % (time.time_ns() // 1_000_000)
                    for key, value in events[start : start + step]:
                        value = value.replace(_PLACEHOLDER_TS, now)
                        if round_:
                            value = value.replace(_FEED_ID, ids)
                        self.producer.produce(self.topic, key=key, value=value)
                    self.producer.poll(0)
                    self.sent += len(events[start : start + step])
                    delay = started + self.sent / self.rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
        except BaseException as exc:  # reported after the run: no figure without the load
            self.failed = exc


def probe(store: Path, producer: Producer, topic: str, seconds: int) -> tuple[list[float], int]:
    """For ``seconds``: a probe event for a new user, then polls (a RocksDB secondary
    refreshed every 100 ms, as a serving worker) until it is visible; the latencies, and
    how many probes were not visible within PROBE_GIVE_UP_S (counted at that time)."""
    encoder = msgspec.json.Encoder()
    reader_store = RocksStore(store, read_only=True)
    reader = SignalReader(
        SignalRegistry.from_module("usersignals.examples.reference"), reader_store
    )
    latencies: list[float] = []
    late, number, last_refresh = 0, 0, 0.0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        number += 1
        user = f"probe-{number}"
        produced = time.time()
        event = {"event_id": user, "user_id": user, "item_id": "i00000001", "action": "save",
                 "surface": "home", "ts": int(produced * 1000)}  # fmt: skip
        producer.produce(topic, key=user.encode(), value=encoder.encode(event))
        producer.poll(0)
        while time.time() - produced < PROBE_GIVE_UP_S:
            if time.monotonic() - last_refresh >= 0.1:  # as a serving worker does
                reader_store.refresh()
                last_refresh = time.monotonic()
            answer = reader.read(user, ["action_counts"], ReadContext())
            if answer.signals["action_counts"].value["total"]:
                latencies.append(time.time() - produced)
                break
            time.sleep(0.005)
        else:  # not visible in time: in the figures at the time waited, a lower bound
            latencies.append(PROBE_GIVE_UP_S)
            late += 1
        time.sleep(0.05)
    reader_store.close()
    return latencies, late


def freshness(
    root: Path, bootstrap: str, rate: float, seconds: int
) -> tuple[list[float], FreshnessRun]:
    topic = "fresh"
    create_topic(bootstrap, topic, PARTITIONS)
    feed = encoded_feed(root, rate, FEED_ROUND_S)
    processor = start_processor(root, bootstrap, topic, feed)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    feeder = Feeder(producer, topic, feed, rate)
    feed_started = time.monotonic()
    feeder.start()
    time.sleep(FRESHNESS_WARM_UP_S)  # group join and warm-up
    probes_from, caught_up = wait_until_caught_up(
        bootstrap, topic, "fresh", rate, lambda: feeder.sent
    )
    latencies, late = probe(root / FEED_STORE, producer, topic, seconds)
    feeder.stopping.set()
    feeder.join()
    run = FreshnessRun(
        feeder.sent, time.monotonic() - feed_started, late, probes_from - feed_started, caught_up
    )
    producer.flush(10)
    processor.send_signal(signal.SIGTERM)
    processor.wait(timeout=60)
    if feeder.failed is not None:
        raise RuntimeError("the freshness feed failed: no figure without its load") from (
            feeder.failed
        )
    return latencies, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--freshness-seconds", type=int, default=20)
    parser.add_argument("--freshness-rate", type=float, default=None,
                        help="the feed's events/s (default: half usersignals')")  # fmt: skip
    names = [framework.name for framework in FRAMEWORKS]
    parser.add_argument("--skip", action="append", default=[], choices=names, metavar="NAME",
                        help=f"leave out a framework ({', '.join(names)}); repeatable")  # fmt: skip
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="usersignals-ingest-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)  # ~200 MB of stores a run
    with LocalBroker() as broker:
        spec = workload_spec(args.events, seed=7)
        produce_workload(broker.bootstrap, "bench", spec, partitions=PARTITIONS)
        ids = sorted({str(e["item_id"]) for chunk in iter_event_chunks(spec) for e in chunk})
        items = root / "items.jsonl"
        items.write_bytes(msgspec.json.Encoder().encode_lines(list(item_records(spec, ids))))
        print(f"topic: {args.events:,} reference events, {PARTITIONS} partitions, Tansu broker")
        rates = {"bare": bare_consumer(broker.bootstrap, "bench", args.events)}
        print(f"bare consumer: {rates['bare']:,.0f} events/s", flush=True)
        rates["usersignals"] = usersignals_rate(root, broker.bootstrap, "bench", items, args.events)
        print(f"usersignals: {rates['usersignals']:,.0f} events/s", flush=True)
        for framework in FRAMEWORKS:
            if framework.name in args.skip:
                continue
            rate = framework_rate(framework, root, broker.bootstrap, "bench", items, args.events)
            if rate is not None:
                rates[framework.name] = rate
                print(f"{framework.label}: {rate:,.0f} events/s", flush=True)
        feed_rate = args.freshness_rate or rates["usersignals"] / 2
        latencies, run = freshness(root, broker.bootstrap, feed_rate, args.freshness_seconds)
        latencies.sort()
    print_rates(rates)
    if latencies:
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(
            f"freshness at {run.events / run.seconds:,.0f} events/s "
            f"({'as asked' if args.freshness_rate else 'half of usersignals'}), "
            f"produce -> visible to a reader, {len(latencies)} probes "
            f"({run.late_probes} not visible within {PROBE_GIVE_UP_S:.0f} s, counted as such): "
            f"p50 {statistics.median(latencies) * 1000:.0f} ms, "
            f"p99 {p99 * 1000:.0f} ms (target p99 <= 1000 ms); the feed produced "
            f"{run.events:,} events in {run.seconds:.1f} s ({run.events / run.seconds:,.0f}/s); "
            f"probes from {run.catch_up_s:.1f} s into the feed, "
            + (
                "once the processor had caught up"
                if run.caught_up
                else f"the processor NOT caught up after {CATCH_UP_LIMIT_S:.0f} s"
            )
        )


def print_rates(rates: dict[str, float]) -> None:
    labels = {
        "bare": "bare confluent-kafka consumer (the ceiling)",
        "usersignals": "usersignals (decode, enrich, 5 signals, RocksDB, commits)",
        **{f.name: f"{f.label} (same 5 signals)" for f in FRAMEWORKS},
    }
    ours = rates["usersignals"]
    print(f"\n{'consumer':60s} {'events/s':>10s} {'of bare':>8s}")
    for name, rate in rates.items():
        print(f"{labels[name]:60s} {rate:>10,.0f} {rate / rates['bare']:>8.1%}")
    print(f"\nusersignals / bare consumer = {ours / rates['bare']:.1%} (target >= 25%)")
    fastest = max((rates[n] for n in ("pathway", "bytewax") if n in rates), default=None)
    if fastest is not None:
        print(
            f"usersignals / fastest of Pathway and Bytewax = {ours / fastest:.2f}x (target >= 5x)"
        )
    if "quix" in rates:
        print(f"usersignals / Quix Streams = {ours / rates['quix']:.1f}x")


if __name__ == "__main__":
    main()
