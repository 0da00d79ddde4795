"""The five reference signals in Pathway, for bench/ingest.py (run in its own venv).

Pathway is a Rust (differential dataflow) engine with a Python API: its Kafka reader parses
the JSON events in Rust, the table is grouped by user, and a ``stateful_many`` reducer folds
each user's events of a batch into the user's state with the shared fold of
bench/reference_signals.py (the item table in memory for enrichment); the reducer's value is
the count of events folded. A subscriber to the result sums the counts and reports when
every event is folded, timed from the end of the first batch as usersignals is. One
process, one worker thread, as the other consumers of the bench.

    bench/.venv-pathway/bin/python bench/pathway_reference.py BOOTSTRAP TOPIC EVENTS ITEMS.jsonl
"""

from __future__ import annotations

import json
import os
import sys
from time import perf_counter, time_ns
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
    seen = {"count": 0, "folded": 0, "first": 0.0, "first_events": 0}
    # The users' states live here, not as the reducer's values: Pathway hashes and compares
    # every value it holds, and a Python dict (unhashable) is pickled to be hashed — on each
    # update, a cost growing with the state that would be ours, not Pathway's. Held in
    # memory, as Pathway's own reducer states (and Bytewax's) are.
    states: dict[str, dict[str, Any]] = {}

    @pw.reducers.stateful_many
    def fold(folded: int | None, rows: list[tuple[list[Any], int]]) -> int:
        """Folds a batch's events of one user; its value is how many it has folded."""
        for (user_id, item_id, action, surface, ts), count in rows:
            user = states.setdefault(user_id, {})
            event = {"item_id": item_id, "action": action, "surface": surface, "ts": ts}
            for _ in range(count):  # a row seen twice in a batch comes once, counted twice
                apply(user, event, items.get(item_id, {}))
            seen["folded"] += count
        return (folded or 0) + sum(count for _, count in rows)

    events = pw.io.kafka.read(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"pathway-{time_ns()}",
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
        events=fold(pw.this.user_id, pw.this.item_id, pw.this.action, pw.this.surface, pw.this.ts),
    )

    def on_change(key: Any, row: dict[str, Any], time: int, is_addition: bool) -> None:
        seen["count"] += row["events"] if is_addition else -row["events"]

    def on_time_end(time: int) -> None:
        # Timed from the end of the first batch, as usersignals is (its first batch's events
        # left out of the rate): Pathway reports results per batch, not per event.
        if not seen["first"]:
            seen["first"], seen["first_events"] = perf_counter(), seen["count"]
        if seen["count"] >= expected:
            figures = {
                "events": seen["folded"],  # bench/ingest.py checks that all were folded
                "timed_events": seen["count"] - seen["first_events"],
                "seconds": perf_counter() - seen["first"],
            }
            print(json.dumps(figures), flush=True)
            # Pathway runs a Kafka source forever; the figures are out, so end the process.
            os._exit(0)

    pw.io.subscribe(users, on_change=on_change, on_time_end=on_time_end)
    pw.run(monitoring_level=pw.MonitoringLevel.NONE)


if __name__ == "__main__":
    main()
