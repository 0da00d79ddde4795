"""Engine throughput in the live regime: small micro-batches over users with history.

Method: generate the seeded reference workload (``--history`` + ``--live`` events over
``--span-days``), decode it, load its item table into RocksDB, apply the first ``--history``
events in batches of 100,000 (untimed: the states a running service has), then time
``Engine.process`` over the next ``--live`` events in batches of ``--batch`` (as a processor
keeping up with its stream closes them). One process; the figure is events per CPU-second
of this process (RocksDB's own threads included), and events per wall-clock second.

``bench/engine.py`` measures the other end: batches of 100,000 from empty states, as a
processor behind its stream takes them. Here each batch decodes, applies, encodes and writes
every user it touches, whole, for a handful of their events: the cost a live stream pays
per event (docs/performance.md, "What the live regime costs").

    .venv/bin/python bench/engine_live.py                   # 14 days, batches of 5,000
    .venv/bin/python bench/engine_live.py --span-days 90    # states with more buckets
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from engine import load_items  # bench/engine.py, beside this script
from usersignals.enrich import Materializer, TableSource
from usersignals.events import EventDecoder, EventPolicy, Position
from usersignals.ingest.synthetic import WorkloadSpec, iter_event_json_lines
from usersignals.malloc_tuning import return_large_blocks
from usersignals.processing import Engine, MicroBatch
from usersignals.processing.gc_tuning import tune_collector
from usersignals.signals import SignalRegistry
from usersignals.state import RocksStore

DAY_MS = 86_400_000
HISTORY_BATCH = 100_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--history", type=int, default=1_000_000)
    parser.add_argument("--live", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--span-days", type=int, default=14)
    args = parser.parse_args()
    return_large_blocks()  # as `usersignals run` does before its store opens
    total = args.history + args.live
    spec = WorkloadSpec(events=total, span_ms=args.span_days * DAY_MS)
    lines = [line for block in iter_event_json_lines(spec) for line in block.splitlines() if line]
    decoded = EventDecoder(EventPolicy()).decode_block(lines, now_ms=spec.start_ms + spec.span_ms)
    del lines
    events = decoded.events
    positions = [Position("bench/0", offset) for offset in range(len(events))]
    registry = SignalRegistry.from_module("usersignals.examples.reference")
    with tempfile.TemporaryDirectory(prefix="usersignals-bench-") as directory:
        store = RocksStore(Path(directory) / "store")
        load_items(spec, sorted({event.item_id for event in events}), store)
        items = TableSource("items", store.table("items"))
        engine = Engine(registry, store, Materializer({"items": items}))
        tune_collector()  # as the processor does once built
        for start in range(0, args.history, HISTORY_BATCH):
            end = min(start + HISTORY_BATCH, args.history)
            engine.process(MicroBatch(events[start:end], positions[start:end]))
        cpu_started, started = time.process_time(), time.perf_counter()
        for start in range(args.history, total, args.batch):
            end = min(start + args.batch, total)
            engine.process(MicroBatch(events[start:end], positions[start:end]))
        cpu, seconds = time.process_time() - cpu_started, time.perf_counter() - started
        store.close()
    print(
        f"live: {args.live:,} events in batches of {args.batch:,} after {args.history:,} of "
        f"history over {args.span_days} days: {cpu:.2f} s CPU, "
        f"{args.live / cpu:,.0f} events per CPU-second, {args.live / seconds:,.0f} events/s"
    )


if __name__ == "__main__":
    main()
