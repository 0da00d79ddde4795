"""The five reference signals in Bytewax, for bench/ingest.py (run in its own venv).

Bytewax is a Rust (timely) dataflow driving Python steps: its Kafka source reads the topic
to its end (``tail=False``), events are keyed by user and each is folded into the user's
state by ``stateful_map`` with the shared fold of bench/reference_signals.py, the item table
in memory for enrichment. One worker, as the other consumers of the bench.

    bench/.venv-bytewax/bin/python bench/bytewax_reference.py BOOTSTRAP TOPIC EVENTS ITEMS.jsonl
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSource, KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main

from reference_signals import State, apply, load_items

SEEN = {"count": 0, "first": 0.0}


class _Drop(StatelessSinkPartition[Any]):
    def write_batch(self, items: list[Any]) -> None:
        return None


class DropSink(DynamicSink[Any]):
    """Discards the per-event output: the bench measures the state updates, not a sink."""

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Drop:
        return _Drop()


def build(bootstrap: str, topic: str, items: dict[str, dict[str, Any]]) -> Dataflow:
    def keyed(message: KafkaSourceMessage[bytes, bytes]) -> tuple[str, dict[str, Any]]:
        if not SEEN["first"]:
            SEEN["first"] = time.perf_counter()
        event = json.loads(message.value)
        return str(event["user_id"]), event

    def fold(state: State | None, event: dict[str, Any]) -> tuple[State, int]:
        SEEN["count"] += 1
        return apply(state or {}, event, items.get(event["item_id"], {})), SEEN["count"]

    flow = Dataflow("reference_signals")
    source = KafkaSource(
        [bootstrap], [topic], tail=False, batch_size=10_000,
        add_config={"group.id": f"bytewax-{time.time_ns()}", "fetch.queue.backoff.ms": "10"},
    )  # fmt: skip
    messages = op.input("kafka", flow, source)
    states = op.stateful_map("signals", op.map("key_by_user", messages, keyed), fold)
    op.output("drop", states, DropSink())
    return flow


def main() -> None:
    bootstrap, topic, total, items_path = sys.argv[1:5]
    run_main(build(bootstrap, topic, load_items(items_path)))
    seconds = time.perf_counter() - SEEN["first"]
    if SEEN["count"] != int(total):
        sys.exit(f"bytewax folded {SEEN['count']} events, expected {total}")
    print(json.dumps({"events": SEEN["count"], "seconds": seconds}))


if __name__ == "__main__":
    main()
