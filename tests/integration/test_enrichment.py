"""Enrichment through the engine: one de-duplicated fetch, and both failure policies against
a real HTTP lookup service that is slow or down, then recovers."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from prometheus_client import CollectorRegistry

from usersignals import Engine, Event, MicroBatch, Position, ReadContext, RocksStore, SignalRegistry
from usersignals.enrich import Materializer
from usersignals.enrich.materializer import SourcePolicy
from usersignals.enrich.metrics import EnrichmentMetrics
from usersignals.enrich.sources import HttpBatchSource
from usersignals.serving import SignalReader

NOW = 1_767_225_600_000
ITEMS = {f"i{n}": {"item_id": f"i{n}", "category": f"c{n % 3}", "creator_id": f"cr{n}",
                   "embedding": [0.1] * 32} for n in range(20)}  # fmt: skip


class Lookup(BaseHTTPRequestHandler):
    """The documented HTTP batch contract; ``slow`` requests sleep past the client timeout."""

    slow: ClassVar[int] = 0
    requests: ClassVar[list[list[str]]] = []

    def do_POST(self) -> None:
        keys = json.loads(self.rfile.read(int(self.headers["content-length"])))["keys"]
        Lookup.requests.append(keys)
        if Lookup.slow > 0:
            Lookup.slow -= 1
            time.sleep(0.5)
        body = json.dumps({"records": {k: ITEMS[k] for k in keys if k in ITEMS}}).encode()
        # The client may have timed out and gone: that is the point of the slow answers.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def lookup_url() -> Iterator[str]:
    Lookup.slow, Lookup.requests = 0, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Lookup)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/lookup"
    server.shutdown()
    server.server_close()


def events(n: int) -> tuple[list[Event], list[Position]]:
    evs = [
        Event(f"e{i}", f"u{i % 4}", f"i{i % 10}", ["click", "save", "impression"][i % 3],
              "home", NOW + i)
        for i in range(n)
    ]  # fmt: skip
    return evs, [Position("p", i) for i in range(n)]


def engine(
    tmp_path: Path, url: str, policy: SourcePolicy, metrics: CollectorRegistry | None = None
) -> Engine:
    registry = SignalRegistry.from_module("usersignals.examples.reference")
    source = HttpBatchSource("items", url, timeout_s=0.1)
    materializer = Materializer(
        {"items": source},
        policies={"items": policy},
        sleep=lambda _: None,
        metrics=EnrichmentMetrics(metrics) if metrics is not None else None,
    )
    return Engine(registry, RocksStore(tmp_path / "store"), materializer)


def test_one_deduplicated_fetch_serves_every_signal_and_event(
    tmp_path: Path, lookup_url: str
) -> None:
    metrics = CollectorRegistry()
    e = engine(tmp_path, lookup_url, SourcePolicy(), metrics)
    try:
        batch_events, positions = events(60)
        e.process(MicroBatch(batch_events, positions))
        # Four reference signals need the items source; 60 events carry 10 distinct items.
        assert len(Lookup.requests) == 1
        assert sorted(Lookup.requests[0]) == sorted({ev.item_id for ev in batch_events})
        more, more_positions = events(120)
        e.process(MicroBatch(more[60:], more_positions[60:]))
        assert len(Lookup.requests) == 1  # every item is in the cache now
        sample = metrics.get_sample_value
        labels = {"source": "items"}
        assert sample("usersignals_lookup_keys_requested_total", labels) == 20
        assert sample("usersignals_lookup_keys_fetched_total", labels) == 10
        assert sample("usersignals_lookup_cache_hits_total", labels) == 10
        assert sample("usersignals_lookup_fetch_seconds_count", labels) == 1
    finally:
        e.store.close()


def test_missing_policy_applies_every_event_with_the_fields_missing(
    tmp_path: Path, lookup_url: str
) -> None:
    Lookup.slow = 10  # every attempt times out
    e = engine(tmp_path, lookup_url, SourcePolicy("missing", retries=1))
    try:
        batch_events, positions = events(30)
        report = e.process(MicroBatch(batch_events, positions))
        assert report.missing_enrichment["items"] > 0
        assert e.materializer is not None
        assert e.materializer.stats.failures == {"ReadTimeout": 2}
        reader = SignalReader(e.registry, e.store)
        counts = reader.read("u0", ["action_counts"], ReadContext(now_ms=NOW + 100))
        assert counts.signals["action_counts"].value["total"] == 8  # no event lost
        sequence = reader.read("u0", ["recent_engagements"], ReadContext(now_ms=NOW + 100))
        assert {entry["category"] for entry in sequence.signals["recent_engagements"].value} == {
            None
        }
    finally:
        e.store.close()


def test_hold_policy_waits_for_the_source_and_then_enriches_everything(
    tmp_path: Path, lookup_url: str
) -> None:
    Lookup.slow = 3  # down for three attempts, then recovers
    e = engine(tmp_path, lookup_url, SourcePolicy("hold", retries=1))
    try:
        batch_events, positions = events(30)
        report = e.process(MicroBatch(batch_events, positions))
        assert report.missing_enrichment.get("items", 0) == 0
        assert e.materializer is not None
        assert e.materializer.stats.failures == {"ReadTimeout": 3}
        reader = SignalReader(e.registry, e.store)
        sequence = reader.read("u1", ["recent_engagements"], ReadContext(now_ms=NOW + 100))
        categories = {entry["category"] for entry in sequence.signals["recent_engagements"].value}
        assert None not in categories
        assert categories
    finally:
        e.store.close()
