"""Engine throughput: decoded reference events → the five reference signals on RocksDB.

Method: generate the seeded reference workload in memory, decode it to events (timed apart),
load its item table into the store, then time ``Engine.process`` alone over micro-batches,
one process, on one core. Afterwards, measure the stored state per user (all five signals and
the progress, as written: the value bytes of each user's record).

    .venv/bin/python bench/engine.py                 # 1M events, batches of 100k
    .venv/bin/python bench/engine.py --batch 20000   # as the figures before 2026-11-27
    .venv/bin/python bench/engine.py --events 200000 --profile   # where the time goes
    .venv/bin/python bench/engine.py --rss --events 10000000     # memory over a long run

Instructions, which do not move with the machine's load: callgrind's total for a run with
``--no-report`` minus its total for the same run with ``--setup-only`` (everything but
``Engine.process``):

    valgrind --tool=callgrind .venv/bin/python bench/engine.py --events 50000 --batch 10000 \
        --no-report
    valgrind --tool=callgrind .venv/bin/python bench/engine.py --events 50000 --batch 10000 \
        --setup-only

``--rss`` streams the workload instead (generate a batch, decode it, process it, drop it: the
harness holds no events), after loading the item table of all its events in a first pass,
and prints this process's resident set size every ``--rss-every`` events, so "RSS flat over
10 M events" can be read off: the engine, the Materializer and RocksDB, nothing else growing.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from usersignals.config import KafkaSettings
from usersignals.enrich import Materializer, TableSource
from usersignals.enrich.sources import encode_table_record
from usersignals.events import EventDecoder, EventPolicy, Position
from usersignals.ingest.synthetic import (
    WorkloadSpec,
    item_records,
    iter_event_chunks,
    iter_event_json_lines,
)
from usersignals.malloc_tuning import return_large_blocks
from usersignals.processing import BatchReport, Engine, MicroBatch
from usersignals.processing.gc_tuning import tune_collector
from usersignals.processing.native import NativeSignals
from usersignals.signals import SignalRegistry
from usersignals.state import RocksStore, decode_record
from usersignals.state.codec import UserRecord


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    # The service's largest micro-batch, which it runs at when it is behind (the throughput
    # this measures): see KafkaSettings.batch_max_events.
    parser.add_argument("--batch", type=int, default=KafkaSettings().batch_max_events)
    parser.add_argument("--profile", action="store_true", help="profile with pyinstrument")
    parser.add_argument("--rss", action="store_true", help="stream the events, print the RSS")
    parser.add_argument("--rss-every", type=int, default=1_000_000, help="events between prints")
    parser.add_argument("--no-report", action="store_true", help="skip the state size report")
    parser.add_argument("--setup-only", action="store_true", help="stop before processing")
    args = parser.parse_args()
    return_large_blocks()  # as `usersignals run` does before its store opens
    if args.rss:
        return rss_run(args.events, args.batch, args.rss_every)

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
        load_items(spec, sorted({event.item_id for event in events}), store)
        engine = Engine(registry, store, Materializer({"items": TableSource("items", items)}))

        batches = [
            MicroBatch(events[i : i + args.batch], positions[i : i + args.batch])
            for i in range(0, len(events), args.batch)
        ]
        # As the processor does once built (processing/gc_tuning.py); here it also moves the
        # harness's own million events, which a processor never holds, out of the collector's
        # way.
        tune_collector()
        if args.setup_only:
            store.close()
            return
        profiler = None
        if args.profile:
            from pyinstrument import Profiler

            profiler = Profiler()
            profiler.start()
        total = BatchReport()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        cpu_started = time.process_time()
        for batch in batches:
            total.add(engine.process(batch))
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        after = resource.getrusage(resource.RUSAGE_SELF)
        if profiler is not None:
            profiler.stop()
            print(profiler.output_text(unicode=True, color=False, show_all=False))

        print(
            f"engine: {len(events):,} events in {seconds:.2f} s wall ({cpu:.2f} s CPU), "
            f"batches of {args.batch:,}: {len(events) / seconds:,.0f} events/s"
        )
        # The kernel's share and the page faults: on a virtual machine a fault costs a few
        # µs, and memory freshly mapped each batch showed in them (docs/performance.md).
        system = after.ru_stime - usage.ru_stime
        faults = after.ru_minflt - usage.ru_minflt + after.ru_majflt - usage.ru_majflt
        print(
            f"  of the CPU time, in the kernel {system:.2f} s; page faults "
            f"{faults:,} ({faults / len(events):.2f} an event)"
        )
        print(f"  user writes: {total.users:,}; applied per signal: {total.applied}")
        print(f"  expired: {total.expired}; missing enrichment: {total.missing_enrichment}")
        if not args.no_report:
            report_sizes(store, registry)
        store.close()


def load_items(spec: WorkloadSpec, item_ids: list[str], store: RocksStore) -> None:
    items = store.table("items")
    puts = {}
    for record in item_records(spec, item_ids):
        puts[str(record["item_id"]).encode()] = encode_table_record(record)
        if len(puts) >= 20_000:
            items.write(puts)
            puts = {}
    items.write(puts)


def rss_bytes() -> int:
    """This process's resident set size now (Linux: /proc/self/statm, in pages)."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rss_run(total: int, batch: int, every: int) -> None:
    spec = WorkloadSpec(events=total)
    started = time.perf_counter()
    item_ids: set[str] = set()
    for chunk in iter_event_chunks(spec, chunk_size=batch):
        item_ids.update(str(event["item_id"]) for event in chunk)
    ids = sorted(item_ids)
    del item_ids
    print(f"workload: {total:,} reference events, {len(ids):,} distinct items (first pass "
          f"{time.perf_counter() - started:.0f} s); batches of {batch:,}, streamed; "
          "events/s below includes generating and decoding each batch")  # fmt: skip
    registry = SignalRegistry.from_module("usersignals.examples.reference")
    decoder = EventDecoder(EventPolicy())
    with tempfile.TemporaryDirectory(prefix="usersignals-bench-") as directory:
        store = RocksStore(Path(directory) / "store")
        load_items(spec, ids, store)
        del ids
        gc.collect()
        items = TableSource("items", store.table("items"))
        engine = Engine(registry, store, Materializer({"items": items}))
        tune_collector()  # as the processor does once built
        print(f"{'events':>12s} {'seconds':>8s} {'events/s':>9s} {'RSS MB':>8s} "
              f"{'of it, RocksDB write buffers MB':>32s}")  # fmt: skip
        print(f"{0:>12,} {0:>8.0f} {'':>9s} {rss_bytes() / 2**20:>8,.0f}", flush=True)
        done, offset, next_print, samples = 0, 0, every, []
        started = time.perf_counter()
        for block in iter_event_json_lines(spec, chunk_size=batch):
            lines = block.splitlines()
            decoded = decoder.decode_block(lines, now_ms=spec.start_ms + spec.span_ms)
            positions = [Position("bench/0", offset + i) for i in range(len(decoded.events))]
            engine.process(MicroBatch(decoded.events, positions))
            offset += len(lines)
            done += len(decoded.events)
            if done >= next_print or offset >= total:
                seconds = time.perf_counter() - started
                samples.append(rss_bytes())
                buffers = store.write_buffer_bytes() / 2**20
                print(f"{done:>12,} {seconds:>8.0f} {done / seconds:>9,.0f} "
                      f"{samples[-1] / 2**20:>8,.0f} {buffers:>32,.0f}", flush=True)  # fmt: skip
                next_print += every
        store.close()
    if len(samples) >= 3:
        later = samples[len(samples) // 2 :]
        low, high, first = min(later) / 2**20, max(later) / 2**20, samples[0] / 2**20
        print(
            f"RSS over the second half of the run: {low:,.0f}-{high:,.0f} MB (first {first:,.0f})"
        )


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
