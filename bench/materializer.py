"""The Generic Materializer against a naive lookup per event per signal, over HTTP.

Method, in one run: a real HTTP batch lookup service (usersignals.devtools.lookup_server,
in its own process, speaking the documented contract) serves the reference item table. The
reference workload's events go through, in micro-batches:
- batched: per micro-batch, the distinct item ids of the events any signal wants, fetched once
  through the Materializer (HttpBatchSource: up to 1,000 keys a request, 4 at once, LRU cache
  with TTL across batches), then joined onto every event;
- naive: for every event and every signal that wants it, one request for that one item,
  over a kept-alive connection (how enrichment inside each signal would work).
Both count HTTP requests and time the enrichment alone; the naive run uses a prefix of the
events (it is slow) and is reported per event.

    .venv/bin/python bench/materializer.py --events 100000
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import msgspec

from usersignals.demo import workload_spec
from usersignals.devtools.broker import free_port
from usersignals.enrich import Materializer
from usersignals.enrich.sources import HttpBatchSource
from usersignals.events import Event
from usersignals.ingest.synthetic import item_records, iter_event_chunks
from usersignals.signals import SignalRegistry


class CountingHttpSource(HttpBatchSource):
    requests = 0

    def _fetch_chunk(self, keys):  # type: ignore[no-untyped-def]
        CountingHttpSource.requests += 1
        return super()._fetch_chunk(keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--naive-events", type=int, default=3_000)
    args = parser.parse_args()

    spec = workload_spec(args.events, seed=7)
    events = [Event(**r) for chunk in iter_event_chunks(spec) for r in chunk]  # type: ignore[arg-type]
    root = Path(tempfile.mkdtemp(prefix="usersignals-materializer-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    items = root / "items.jsonl"
    ids = sorted({event.item_id for event in events})
    items.write_bytes(msgspec.json.Encoder().encode_lines(list(item_records(spec, ids))))
    registry = SignalRegistry.from_module("usersignals.examples.reference")
    wanting = [s for s in registry if any(lookup.name == "items" for lookup in s.lookups)]
    accepts = [s.compiled.accepts for s in wanting]
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "usersignals.devtools.lookup_server", str(items), str(port)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert server.stdout is not None
    assert server.stdout.readline().strip() == "ready"
    url = f"http://127.0.0.1:{port}/lookup"
    try:
        # Batched, through the Materializer.
        source = CountingHttpSource("items", url, timeout_s=5.0, max_batch=1_000, concurrency=4)
        materializer = Materializer({"items": source})
        joined = 0
        started = time.perf_counter()
        for start in range(0, len(events), args.batch):
            batch = events[start : start + args.batch]
            wanted = {e.item_id for e in batch if any(a is None or a((e, ())) for a in accepts)}
            records = materializer.lookup("items", wanted)
            joined += sum(1 for e in batch if e.item_id in records)
        batched_seconds = time.perf_counter() - started
        batched_requests = CountingHttpSource.requests
        source.close()

        # Naive: one request per event per signal that wants the event.
        sample = events[: args.naive_events]
        naive_requests = 0
        with httpx.Client(timeout=5.0) as client:
            started = time.perf_counter()
            for event in sample:
                for accept in accepts:
                    if accept is None or accept((event, ())):
                        client.post(url, content=b'{"keys": ["' + event.item_id.encode() + b'"]}')
                        naive_requests += 1
            naive_seconds = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait()

    batched_rate = len(events) / batched_seconds
    naive_rate = len(sample) / naive_seconds
    batched_per_event = batched_requests / len(events)
    naive_per_event = naive_requests / len(sample)
    print(f"{len(wanting)} reference signals need the item table; {len(events):,} events")
    print(
        f"batched (Materializer, batches of {args.batch:,}): {batched_requests:,} requests, "
        f"{batched_per_event:.4f} per event, {batched_rate:,.0f} events/s enriched"
    )
    print(
        f"naive (one lookup per event per signal), first {len(sample):,} events: "
        f"{naive_requests:,} requests, {naive_per_event:.2f} per event, "
        f"{naive_rate:,.0f} events/s enriched"
    )
    print(f"fetches per event: {naive_per_event / batched_per_event:,.0f}x fewer (target >= 20x)")
    print(f"throughput: {batched_rate / naive_rate:,.0f}x (target >= 10x)")


if __name__ == "__main__":
    main()
