"""The five reference signals in Quix Streams, for bench/ingest.py (run in its own venv).

Quix Streams is what a Python user would pick instead of usersignals: a Kafka consumer with
per-key RocksDB state. This folds each event into the user's state with the shared fold of
bench/reference_signals.py inside its stateful ``update`` — per event, as its API works —
with the item table in memory for enrichment.

    bench/.venv-quix/bin/python bench/quix_reference.py BOOTSTRAP TOPIC EVENTS ITEMS.jsonl STATE
"""

from __future__ import annotations

import json
import sys
import time

from quixstreams import Application

from reference_signals import apply, load_items


def main() -> None:
    bootstrap, topic_name, total, items_path, state_dir = sys.argv[1:6]
    expected = int(total)
    items = load_items(items_path)
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
        user = apply(state.get("signals", {}), event, items.get(event["item_id"], {}))
        state.set("signals", user)
        seen["count"] += 1
        if seen["count"] >= expected:
            app.stop()

    app.dataframe(topic).update(signals, stateful=True)
    app.run()
    seconds = time.perf_counter() - seen["first"]
    print(json.dumps({"events": seen["count"], "seconds": seconds}))


if __name__ == "__main__":
    main()
