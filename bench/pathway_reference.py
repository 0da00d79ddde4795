"""The five reference signals in Pathway, for bench/ingest.py (run in its own venv).

Pathway is a Rust (differential dataflow) engine with a Python API: its Kafka reader parses
the JSON events in Rust, the table is grouped by user, and a ``stateful_many`` reducer folds
each user's events of a batch into the user's state with the shared fold of
bench/reference_signals.py (the item table in memory for enrichment); a count per user rides
along. A subscriber to the result sums the counts and reports when every event is folded.
One process, one worker thread, as the other consumers of the bench.

    bench/.venv-pathway/bin/python bench/pathway_reference.py BOOTSTRAP TOPIC EVENTS ITEMS.jsonl
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import pathway as pw

from reference_signals import apply, load_items


class EventSchema(pw.Schema):
    user_id: str
    item_id: str
    action: str
    surface: str
    ts: int


def main() -> None:
    bootstrap, topic, total, items_path = sys.argv[1:5]
    expected = int(total)
    items = load_items(items_path)

    @pw.reducers.stateful_many
    def fold(state: Any, rows: list[tuple[list[Any], int]]) -> Any:
        user = {} if state is None else state.value
        for (item_id, action, surface, ts), count in rows:
            event = {"item_id": item_id, "action": action, "surface": surface, "ts": ts}
            for _ in range(count):  # a row seen twice in a batch comes once, counted twice
                apply(user, event, items.get(item_id, {}))
        return pw.wrap_py_object(user)

    events = pw.io.kafka.read(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"pathway-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": "6000",
        },
        topic=topic,
        format="json",
        schema=EventSchema,
        autocommit_duration_ms=100,
    )
    users = events.groupby(pw.this.user_id).reduce(
        pw.this.user_id,
        events=pw.reducers.count(),
        state=fold(pw.this.item_id, pw.this.action, pw.this.surface, pw.this.ts),
    )
    seen = {"count": 0, "first": 0.0}

    def on_change(key: Any, row: dict[str, Any], time: int, is_addition: bool) -> None:
        if not seen["first"]:
            seen["first"] = _now()
        seen["count"] += row["events"] if is_addition else -row["events"]
        if seen["count"] >= expected:
            seconds = _now() - seen["first"]
            print(json.dumps({"events": seen["count"], "seconds": seconds}), flush=True)
            # Pathway runs a Kafka source forever; the figures are out, so end the process.
            os._exit(0)

    pw.io.subscribe(users, on_change=on_change)
    pw.run(monitoring_level=pw.MonitoringLevel.NONE)


def _now() -> float:
    return time.perf_counter()


if __name__ == "__main__":
    main()
