"""The five reference signals in Quix Streams, for bench/ingest.py (run in its own venv).

Quix Streams is what a Python user would pick instead of usersignals: a Kafka consumer with
per-key RocksDB state. This computes the same five signals with its stateful ``update`` —
per event, as its API works — with the same item table in memory for enrichment:
an enriched LastN(500), counts per (action, surface) in hourly tiles over 28 days, decayed
category interest, a decayed mean embedding, and distinct creators per day over 7 days.

    bench/.venv-quix/bin/python bench/quix_reference.py BOOTSTRAP TOPIC EVENTS ITEMS.jsonl STATE
"""

from __future__ import annotations

import json
import sys
import time

from quixstreams import Application

HALF_LIFE_MS = 7 * 86_400_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
WEIGHTS = {"impression": 0.1, "closeup": 1.0, "click": 2.0, "save": 4.0, "share": 4.0, "hide": -4.0}
ENGAGEMENTS = {"closeup", "click", "save", "share", "hide"}


def main() -> None:
    bootstrap, topic_name, total, items_path, state_dir = sys.argv[1:6]
    expected = int(total)
    items = {}
    with open(items_path, "rb") as handle:
        for line in handle:
            record = json.loads(line)
            items[record["item_id"]] = record
    app = Application(
        broker_address=bootstrap,
        consumer_group=f"quix-{time.time_ns()}",
        auto_offset_reset="earliest",
        state_dir=state_dir,
        consumer_extra_config={"session.timeout.ms": 6000, "fetch.queue.backoff.ms": 10},
    )
    topic = app.topic(topic_name, value_deserializer="json")
    seen = {"count": 0, "first": 0.0}

    def signals(event: dict, state) -> None:  # type: ignore[no-untyped-def]
        if not seen["first"]:
            seen["first"] = time.perf_counter()
        ts, action = event["ts"], event["action"]
        item = items.get(event["item_id"], {})
        weight = WEIGHTS.get(action, 0.0)
        if action in ENGAGEMENTS:
            last = state.get("last_n", [])
            last.append([ts, event["item_id"], action, event["surface"], item.get("category")])
            last.sort(key=lambda entry: entry[0], reverse=True)
            state.set("last_n", last[:500])
            days = state.get("creators", {})
            day = str(ts - ts % DAY_MS)
            creators = set(days.get(day, []))
            creators.add(item.get("creator_id"))
            days[day] = sorted(c for c in creators if c)
            state.set("creators", {d: v for d, v in days.items() if int(d) >= ts - 7 * DAY_MS})
        counts = state.get("counts", {})
        cell = f"{ts - ts % HOUR_MS}|{action}|{event['surface']}"
        counts[cell] = counts.get(cell, 0) + 1
        cutoff = ts - 28 * DAY_MS
        state.set("counts", {k: v for k, v in counts.items() if int(k.split("|")[0]) >= cutoff})
        interest = state.get("interest", {})
        category = item.get("category")
        if category and weight:
            score, at = interest.get(category, [0.0, ts])
            decay = 2 ** (-(max(ts - at, 0)) / HALF_LIFE_MS)
            interest[category] = [score * decay + weight, max(ts, at)]
            state.set("interest", interest)
        if action in ENGAGEMENTS - {"hide"} and item.get("embedding"):
            total_weight, vector, at = state.get("taste", [0.0, [0.0] * 32, ts])
            decay = 2 ** (-(max(ts - at, 0)) / HALF_LIFE_MS)
            embedding = item["embedding"]
            vector = [v * decay + weight * x for v, x in zip(vector, embedding, strict=True)]
            state.set("taste", [total_weight * decay + weight, vector, max(ts, at)])
        seen["count"] += 1
        if seen["count"] >= expected:
            app.stop()

    app.dataframe(topic).update(signals, stateful=True)
    app.run()
    seconds = time.perf_counter() - seen["first"]
    print(json.dumps({"events": seen["count"], "seconds": seconds}))


if __name__ == "__main__":
    main()
