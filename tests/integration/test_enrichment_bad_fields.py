"""Enrichment records whose fields have unexpected types (issue 9, item 2).

A ``category`` that is a list, an ``embedding`` of strings, a record that is not an object at
all: none may crash the processor, under either failure policy, from a table or from a real
HTTP lookup service. The bad field is missing for that event and counted per source, field
and reason; everything else is processed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from prometheus_client import CollectorRegistry

from usersignals import (
    Count,
    Engine,
    Event,
    MicroBatch,
    Position,
    ReadContext,
    RocksStore,
    Signal,
    SignalRegistry,
    days,
    field,
)
from usersignals.enrich import Materializer, TableSource
from usersignals.enrich.materializer import SourcePolicy
from usersignals.enrich.metrics import EnrichmentMetrics
from usersignals.enrich.sources import HttpBatchSource, LookupSource, encode_table_record
from usersignals.examples.reference import items
from usersignals.serving import SignalReader

NOW = 1_767_225_600_000
GOOD = {"category": "c0", "creator_id": "cr0", "embedding": [0.5] * 32}
RECORDS: dict[str, Any] = {
    "i-good": GOOD,
    "i-list": {**GOOD, "category": ["c0", "c1"]},  # a list where a key is expected
    "i-strings": {**GOOD, "embedding": ["0.5"] * 32},  # an embedding of strings
    "i-short": {**GOOD, "embedding": [0.5] * 3},  # an embedding of the wrong length
    "i-float": {**GOOD, "creator_id": 1.5},  # a fractional number where a key is expected
    "i-object": {**GOOD, "category": {"name": "c0"}},
    "i-scalar": 42,  # not a record at all
}
IN_C0 = Signal(
    name="in_c0",
    version=1,
    where=field("category").isin({"c0"}),
    enrich=[items.fields("category")],
    aggregate=Count(),
    retention=days(28),
)


class Lookup(BaseHTTPRequestHandler):
    records: ClassVar[dict[str, Any]] = RECORDS

    def do_POST(self) -> None:
        keys = json.loads(self.rfile.read(int(self.headers["content-length"])))["keys"]
        body = json.dumps({"records": {k: RECORDS[k] for k in keys if k in RECORDS}}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture(scope="module")
def lookup_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Lookup)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/lookup"
    server.shutdown()
    server.server_close()


def table_source(store: RocksStore) -> LookupSource:
    table = store.table("items")
    rows = {
        key.encode(): encode_table_record(value) if isinstance(value, dict) else b"\xc1"
        for key, value in RECORDS.items()
    }  # b"\xc1" is never valid msgpack: a corrupt row
    table.write(rows)
    return TableSource("items", table)


@pytest.mark.parametrize("policy", ["hold", "missing"])
@pytest.mark.parametrize("kind", ["table", "http"])
def test_bad_fields_are_missing_for_the_event_counted_and_processing_goes_on(
    tmp_path: Path, lookup_url: str, kind: str, policy: str
) -> None:
    registry = SignalRegistry(
        [*SignalRegistry.from_module("usersignals.examples.reference"), IN_C0]
    )
    store = RocksStore(tmp_path / "store")
    source = table_source(store) if kind == "table" else HttpBatchSource("items", lookup_url)
    metrics = CollectorRegistry()
    materializer = Materializer(
        {"items": source},
        policies={"items": SourcePolicy(policy, retries=1)},
        sleep=lambda _: None,
        metrics=EnrichmentMetrics(metrics),
    )
    engine = Engine(registry, store, materializer)
    try:
        item_ids = list(RECORDS)
        events = [
            Event(f"e{n}", "u1", item, "save", "home", NOW + n) for n, item in enumerate(item_ids)
        ]
        positions = [Position("p", n) for n in range(len(events))]
        # Twice: the second batch is served from the cache, which holds the checked records.
        report = engine.process(MicroBatch(events[:4], positions[:4]))
        report.add(engine.process(MicroBatch(events[4:], positions[4:])))
        assert report.applied["recent_engagements@1"] == len(events)

        sample = metrics.get_sample_value
        expected = {
            ("category", "wrong_type"): 2,
            ("embedding", "wrong_type"): 1,
            ("embedding", "wrong_length"): 1,
            ("creator_id", "wrong_type"): 1,
            ("*", "not_an_object"): 1,
        }
        for (name, reason), count in expected.items():
            labels = {"source": "items", "field": name, "reason": reason}
            assert sample("usersignals_lookup_bad_fields_total", labels) == count, labels

        reader = SignalReader(registry, store)
        answer = reader.read("u1", None, ReadContext(now_ms=NOW + 100))
        by_item = {e["item_id"]: e for e in answer.signals["recent_engagements"].value}
        assert by_item["i-good"]["category"] == "c0"
        assert by_item["i-strings"]["category"] == "c0"  # only the bad field is dropped
        for item in ("i-list", "i-object", "i-scalar"):
            assert by_item[item]["category"] is None
        # Only the good category is counted in the filter and the interest profile.
        assert answer.signals["in_c0"].value["total"] == 4
        assert [e["key"] for e in answer.signals["category_interest"].value] == ["c0"]
        assert answer.signals["taste_embedding"].value["vector"] == pytest.approx([0.5] * 32)
    finally:
        store.close()
