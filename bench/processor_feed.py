"""The Kafka processor under a steady feed: how its rate and its threads' CPU go over time.

Method: a local Kafka-protocol broker (Tansu) on 127.0.0.1, a topic of 6 partitions fed at
``--rate`` events/s with bench/ingest.py's freshness feed (the reference workload, another
seed, every event stamped at its send, round after round with new event ids), and
``usersignals run`` on it in its own process, as bench/ingest.py's freshness step starts it
(batches of at most 100 ms), its metrics served. Every ``--every`` seconds: the events the
processor wrote since the last line, their rate and the mean events a micro-batch, its main
thread's CPU per event (the thread that applies and writes: it sets the pace) and its other
threads' (the fetch thread decoding and reading ahead, RocksDB's, librdkafka's), the lookup
cache's hits and fetches, and the user records written over
``processing.large_record_bytes``. At the end: the events
sent, how far behind the processor's committed offsets were, and the stored records: their
count, median and total bytes, and the largest few with each part's bytes (the event-id
fingerprints, each signal's state).

    .venv/bin/python bench/processor_feed.py --rate 60000 --seconds 60

What it showed (docs/performance.md, the stops from 03:50 and 06:30 UTC on 2026-11-28): the
rate falls as the feed goes on, with its busiest users' records (their event ids'
fingerprints within the dedupe horizon; their windowed counts' exact entries: both capped
since).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from ingest import FEED_ROUND_S, FEED_STORE, PARTITIONS, Feeder, encoded_feed, start_processor
from usersignals.devtools.broker import LocalBroker, free_port
from usersignals.ingest.kafka import create_topic
from usersignals.state import RocksStore
from usersignals.state.codec import decode_record

TOPIC, GROUP = "fresh", "fresh"  # the group start_processor's processor joins
_COUNTERS = {
    "usersignals_batch_events_sum": "events",
    "usersignals_batch_events_count": "batches",
    "usersignals_lookup_cache_hits_total": "cache hits",
    "usersignals_lookup_keys_fetched_total": "keys fetched",
    "usersignals_large_records_total": "large records",
}


@dataclass
class Sample:
    seconds: float
    main_cpu: float
    other_cpu: float
    counters: dict[str, float]


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """A process's (or one of its threads') user and system CPU, in seconds."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sample(pid: int, port: int, started: float) -> Sample:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    counters = dict.fromkeys(_COUNTERS.values(), 0.0)
    for line in text.splitlines():
        for prefix, name in _COUNTERS.items():
            if line.startswith(prefix):
                counters[name] += float(line.rsplit(" ", 1)[1])
    main = cpu_seconds(pid, pid)
    return Sample(time.monotonic() - started, main, cpu_seconds(pid) - main, counters)


def report(before: Sample, after: Sample) -> str:
    events = after.counters["events"] - before.counters["events"]

    def micros(cpu: float) -> str:
        return f"{cpu * 1e6 / events:.1f}" if events else "-"

    batches = after.counters["batches"] - before.counters["batches"]
    hits = after.counters["cache hits"] - before.counters["cache hits"]
    fetched = after.counters["keys fetched"] - before.counters["keys fetched"]
    return (
        f"{after.seconds:5.0f} s  {events:>9,.0f} events  "
        f"{events / (after.seconds - before.seconds):>8,.0f}/s  "
        f"{events / batches if batches else 0:>7,.0f} a batch  "
        f"main {micros(after.main_cpu - before.main_cpu):>5} µs/event  "
        f"others {micros(after.other_cpu - before.other_cpu):>5} µs/event  "
        f"cache hits {hits:>7,.0f} fetched {fetched:>7,.0f}  "
        f"large records {after.counters['large records']:,.0f}"
    )


def committed(bootstrap: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP})
    try:
        parts = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
        return sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10))
    finally:
        consumer.close()


def records_summary(store_path: Path, largest: int = 5) -> str:
    """The stored user records: how many, their median and total bytes, and the largest
    ones with each part's bytes (fingerprints, then each signal's state)."""
    store = RocksStore(store_path)
    try:
        sized = sorted(((len(data), key, data) for key, data in store.scan(b"u:")), reverse=True)
    finally:
        store.close()
    if not sized:
        return "no user records"
    lines = [
        f"{len(sized):,} user records, median {statistics.median(n for n, _, _ in sized):,.0f}"
        f" bytes, {sum(n for n, _, _ in sized) / 1e6:,.1f} MB in all; the largest:"
    ]
    for size, key, data in sized[:largest]:
        record = decode_record(key, data)
        parts = {"fingerprints": sum(map(len, record.seen.values()))}
        parts |= {name: len(bytes(state)) for name, state in record.states.items()}
        detail = ", ".join(f"{name} {n:,}" for name, n in parts.items())
        lines.append(f"  {key.decode(errors='replace')} {size:,} bytes: {detail}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=60_000)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--every", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="usersignals-feed-"))
    try:
        with LocalBroker() as broker:
            create_topic(broker.bootstrap, TOPIC, PARTITIONS)
            feed = encoded_feed(root, args.rate, FEED_ROUND_S)
            port = free_port()
            process = start_processor(root, broker.bootstrap, TOPIC, feed, port)
            producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
            feeder = Feeder(producer, TOPIC, feed, args.rate)
            started = time.monotonic()
            feeder.start()
            print(f"feed at {args.rate:,.0f} events/s for {args.seconds} s; every {args.every} s:")
            try:
                time.sleep(args.every)
                last = sample(process.pid, port, started)
                while time.monotonic() - started < args.seconds:
                    time.sleep(args.every)
                    now = sample(process.pid, port, started)
                    print(report(last, now), flush=True)
                    last = now
            finally:
                feeder.stopping.set()
                feeder.join()
                producer.flush(10)
                behind = feeder.sent - committed(broker.bootstrap)
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)
            print(f"sent {feeder.sent:,} events; the processor's commits {behind:,} behind")
        print(records_summary(root / FEED_STORE))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
