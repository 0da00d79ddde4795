"""Engine throughput: decoded reference events → the five reference signals on RocksDB.

Method: generate the seeded reference workload in memory, decode it to events (timed apart),
load its item table into the store, then time ``Engine.process`` alone over micro-batches,
one process, on one core. Afterwards, measure the stored state per user (all five signals and
the progress, as written: the value bytes of each user's record).

    .venv/bin/python bench/engine.py                 # 1M events, batches of 20k
    .venv/bin/python bench/engine.py --events 200000 --profile   # where the time goes
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from usersignals.enrich import Materializer, TableSource
from usersignals.enrich.sources import encode_table_record
from usersignals.events import EventDecoder, EventPolicy, Position
from usersignals.ingest.synthetic import WorkloadSpec, item_records, iter_event_json_lines
from usersignals.processing import BatchReport, Engine, MicroBatch
from usersignals.processing.native import NativeSignals
from usersignals.signals import SignalRegistry
from usersignals.state import RocksStore, decode_record
from usersignals.state.codec import UserRecord


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true", help="profile with pyinstrument")
    args = parser.parse_args()

    spec = WorkloadSpec(events=args.events)
    decoder = EventDecoder(EventPolicy())
    started = time.perf_counter()
    lines = [line for block in iter_event_json_lines(spec) for line in block.splitlines() if line]
    generated = time.perf_counter() - started
    started = time.perf_counter()
    decoded = decoder.decode_block(lines, now_ms=spec.start_ms + spec.span_ms)
    decode_seconds = time.perf_counter() - started
    events = decoded.events
    positions = [Position("bench/0", offset) for offset in range(len(events))]
    print(f"workload: {len(events):,} reference events ({generated:.1f} s to generate)")
    print(f"decode + validate (msgspec typed): {len(events) / decode_seconds:,.0f} events/s")

    registry = SignalRegistry.from_module("usersignals.examples.reference")
    with tempfile.TemporaryDirectory(prefix="usersignals-bench-") as directory:
        store = RocksStore(Path(directory) / "store")
        items = store.table("items")
        distinct_items = sorted({event.item_id for event in events})
        puts = {}
        for record in item_records(spec, distinct_items):
            puts[str(record["item_id"]).encode()] = encode_table_record(record)
            if len(puts) >= 20_000:
                items.write(puts)
                puts = {}
        items.write(puts)
        engine = Engine(registry, store, Materializer({"items": TableSource("items", items)}))

        batches = [
            MicroBatch(events[i : i + args.batch], positions[i : i + args.batch])
            for i in range(0, len(events), args.batch)
        ]
        profiler = None
        if args.profile:
            from pyinstrument import Profiler

            profiler = Profiler()
            profiler.start()
        total = BatchReport()
        started = time.perf_counter()
        cpu_started = time.process_time()
        for batch in batches:
            total.add(engine.process(batch))
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        if profiler is not None:
            profiler.stop()
            print(profiler.output_text(unicode=True, color=False, show_all=False))

        print(
            f"engine: {len(events):,} events in {seconds:.2f} s wall ({cpu:.2f} s CPU), "
            f"batches of {args.batch:,}: {len(events) / seconds:,.0f} events/s"
        )
        print(f"  user writes: {total.users:,}; applied per signal: {total.applied}")
        print(f"  expired: {total.expired}; missing enrichment: {total.missing_enrichment}")
        report_sizes(store, registry)
        store.close()


def report_sizes(store: RocksStore, registry: SignalRegistry) -> None:
    signal = registry.get("recent_engagements")
    native = NativeSignals([signal])
    sizes = []
    full = []
    # Per part of the record, the bytes of each user with a full LastN(500): where they go.
    parts: dict[str, list[int]] = {}
    for key, value in store.scan(b"u:"):
        sizes.append(len(value))
        record = decode_record(key, value)
        raw = record.states.get(signal.key)
        if raw is not None and native.entries(signal, raw, key) >= 500:
            full.append(len(value))
            for name, size in record_parts(record).items():
                parts.setdefault(name, []).append(size)
    sizes.sort()
    print(
        f"state per user (all five signals + progress): users {len(sizes):,}, "
        f"median {statistics.median(sizes):,.0f} B, p99 {sizes[int(len(sizes) * 0.99)]:,} B, "
        f"max {sizes[-1]:,} B"
    )
    if full:
        full.sort()
        print(
            f"  users with a full LastN(500): {len(full):,}, "
            f"median {statistics.median(full):,.0f} B, max {full[-1]:,} B; median (max) per part:"
        )
        for name, part in sorted(parts.items(), key=lambda item: -statistics.median(item[1])):
            print(f"    {name}: {statistics.median(part):,.0f} B ({max(part):,} B)")


def record_parts(record: UserRecord) -> dict[str, int]:
    """The stored bytes of each state of a user record, its progress and its event-id
    fingerprints (each as msgpack encodes it inside the record)."""
    parts = {key: len(raw) for key, raw in record.states.items()}
    parts["progress"] = len(msgspec.msgpack.encode(record.progress))
    parts["event-id fingerprints"] = len(msgspec.msgpack.encode(record.seen))
    return parts


if __name__ == "__main__":
    sys.exit(main())
