"""Ingest from Kafka: bare consumer vs usersignals vs Quix Streams, and freshness.

Method, in one run, against a local Kafka-protocol broker (Tansu) on 127.0.0.1:
1. produce N reference events (keyed by user id, 6 partitions) and write their item table;
2. (a) a bare confluent-kafka consumer reads the topic (new group): events/s from the first
   message to the last;
3. (b) usersignals (KafkaRunner: decode, enrich, five reference signals, RocksDB, commits)
   consumes the same topic with a new group: events/s from the first batch to the last;
4. (c) Quix Streams computes the same five signals with its stateful ``update`` (its own
   venv, bench/.venv-quix, created on first use): events/s from the first message;
5. freshness: usersignals consumes a live topic fed at half of (b)'s rate with events stamped
   now; a probe event for a new user is produced every 100 ms and a reader in this process
   (a RocksDB secondary refreshed every 100 ms, as a serving worker) polls until the probe
   is visible; p50/p99 of produce → visible.

    .venv/bin/python bench/ingest.py --events 200000
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgspec
from confluent_kafka import Consumer, Producer

from usersignals.aggregations.context import ReadContext
from usersignals.app import build_kafka_runner, build_processor
from usersignals.config import KafkaSettings, Settings, StoreSettings
from usersignals.demo import workload_spec
from usersignals.devtools.broker import LocalBroker
from usersignals.enrich.tables import load_table
from usersignals.ingest.kafka import create_topic
from usersignals.ingest.kafka_produce import produce_workload
from usersignals.ingest.synthetic import item_records, iter_event_chunks
from usersignals.processing.metrics import ProcessorMetrics
from usersignals.serving.reader import SignalReader
from usersignals.signals.registry import SignalRegistry
from usersignals.state.rocks import RocksStore

HERE = Path(__file__).resolve().parent
QUIX_VENV = HERE / ".venv-quix"
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
    processor = build_processor(settings)
    load_table(processor.store.table("items"), items, key="item_id")
    runner = build_kafka_runner(processor, ProcessorMetrics())
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,))
    thread.start()
    first = 0.0
    while runner.stats.report.events + runner.stats.bad < total:
        if not first and runner.stats.batches:
            first = time.perf_counter()  # end of the first batch: join time excluded
            first_events = runner.stats.report.events
        time.sleep(0.01)
    seconds = time.perf_counter() - first
    stop.set()
    thread.join()
    runner.close()  # the consumer, the dead-letter producer and the processor it took over
    return (total - first_events) / seconds


def quix_rate(root: Path, bootstrap: str, topic: str, items: Path, total: int) -> float | None:
    python = QUIX_VENV / "bin" / "python"
    if not python.exists():
        print("creating bench/.venv-quix (quixstreams==3.28.1) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(QUIX_VENV)], check=True)
        subprocess.run(
            [str(QUIX_VENV / "bin" / "pip"), "install", "-q", "quixstreams==3.28.1"], check=True
        )
    result = subprocess.run(
        [str(python), str(HERE / "quix_reference.py"), bootstrap, topic, str(total),
         str(items), str(root / "quix-state")],
        capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    if result.returncode != 0:
        print(f"quix failed: {result.stderr[-2000:]}")
        return None
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return float(figures["events"]) / float(figures["seconds"])


def freshness(root: Path, bootstrap: str, items: Path, rate: float, seconds: int) -> list[float]:
    topic = "fresh"
    create_topic(bootstrap, topic, PARTITIONS)
    store = root / "store-f"
    table_store = RocksStore(store)
    load_table(table_store.table("items"), items, key="item_id")
    table_store.close()
    # The processor in its own process, as deployed (not sharing this process's GIL).
    env = {
        **os.environ,
        "USERSIGNALS_KAFKA__GROUP_ID": "fresh",
        "USERSIGNALS_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "USERSIGNALS_KAFKA__BATCH_MAX_WAIT_MS": "100",
        "USERSIGNALS_KAFKA__DEAD_LETTER_TOPIC": "fresh.dead",
    }
    processor = subprocess.Popen(
        [str(Path(sys.executable).parent / "usersignals"), "run", "--kafka", bootstrap,
         "--topic", topic, "--store", str(store)],
        env=env, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    stop = threading.Event()
    encoder = msgspec.json.Encoder()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})

    def feed() -> None:
        spec = workload_spec(10**9, seed=21)
        sent, started = 0, time.monotonic()
        for chunk in iter_event_chunks(spec, chunk_size=max(int(rate) // 20, 1)):
            if stop.is_set():
                return
            now = time.time_ns() // 1_000_000
            for event in chunk:
                event["ts"] = now
                key = str(event["user_id"]).encode()
                producer.produce(topic, key=key, value=encoder.encode(event))
            producer.poll(0)
            sent += len(chunk)
            delay = started + sent / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    feeder = threading.Thread(target=feed)
    feeder.start()
    time.sleep(8)  # group join and warm-up
    reader_store = RocksStore(store, read_only=True)
    reader = SignalReader(
        SignalRegistry.from_module("usersignals.examples.reference"), reader_store
    )
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    probe = 0
    last_refresh = 0.0
    while time.monotonic() < deadline:
        probe += 1
        user = f"probe-{probe}"
        produced = time.time()
        event = {"event_id": user, "user_id": user, "item_id": "i00000001", "action": "save",
                 "surface": "home", "ts": int(produced * 1000)}  # fmt: skip
        producer.produce(topic, key=user.encode(), value=encoder.encode(event))
        producer.poll(0)
        while time.time() - produced < 10:
            if time.monotonic() - last_refresh >= 0.1:  # as a serving worker does
                reader_store.refresh()
                last_refresh = time.monotonic()
            answer = reader.read(user, ["action_counts"], ReadContext())
            if answer.signals["action_counts"].value["total"]:
                latencies.append(time.time() - produced)
                break
            time.sleep(0.005)
        time.sleep(0.05)
    stop.set()
    feeder.join()
    producer.flush(10)
    processor.send_signal(signal.SIGTERM)
    processor.wait(timeout=60)
    reader_store.close()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--freshness-seconds", type=int, default=20)
    parser.add_argument("--skip-quix", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="usersignals-ingest-"))
    with LocalBroker() as broker:
        spec = workload_spec(args.events, seed=7)
        produce_workload(broker.bootstrap, "bench", spec, partitions=PARTITIONS)
        ids = sorted({str(e["item_id"]) for chunk in iter_event_chunks(spec) for e in chunk})
        items = root / "items.jsonl"
        items.write_bytes(msgspec.json.Encoder().encode_lines(list(item_records(spec, ids))))
        print(f"topic: {args.events:,} reference events, {PARTITIONS} partitions, Tansu broker")
        bare = bare_consumer(broker.bootstrap, "bench", args.events)
        print(f"(a) bare confluent-kafka consumer: {bare:,.0f} events/s", flush=True)
        ours = usersignals_rate(root, broker.bootstrap, "bench", items, args.events)
        print(f"(b) usersignals (5 reference signals, RocksDB, commits): {ours:,.0f} events/s")
        quix = (
            None
            if args.skip_quix
            else quix_rate(root, broker.bootstrap, "bench", items, args.events)
        )
        if quix is not None:
            print(f"(c) Quix Streams, same signals, stateful update: {quix:,.0f} events/s")
        latencies = sorted(
            freshness(root, broker.bootstrap, items, ours / 2, args.freshness_seconds)
        )
    print(f"\n(b)/(a) = {ours / bare:.1%} (target >= 50%)")
    if quix is not None:
        print(f"(b)/(c) = {ours / quix:.1f}x (target >= 10x)")
    if latencies:
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(
            f"freshness at {ours / 2:,.0f} events/s (half of (b)), produce -> visible to a "
            f"reader, {len(latencies)} probes: p50 {statistics.median(latencies) * 1000:.0f} ms, "
            f"p99 {p99 * 1000:.0f} ms (target p99 <= 1000 ms)"
        )


if __name__ == "__main__":
    main()
