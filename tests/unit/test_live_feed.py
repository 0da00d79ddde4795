"""The live feed of the demo: fresh reference events in the spool, their items in the table
before the events that name them, so that every live event is enriched."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from usersignals.enrich.sources import encode_table_record
from usersignals.ingest.live import add_new_items, feed_spool
from usersignals.ingest.spool import SUFFIX
from usersignals.ingest.synthetic import WorkloadSpec, item_record, iter_event_chunks
from usersignals.state.memory import MemoryStore
from usersignals.state.store import KeyValueTable


def test_every_live_event_finds_its_item_in_the_table(tmp_path: Path) -> None:
    store = MemoryStore()
    items = store.table("items")
    spec = WorkloadSpec(events=10**12, seed=3)
    # An item the table holds already (as a replay's load leaves it) is not written again.
    first = next(iter_event_chunks(spec, chunk_size=1))[0]
    kept = encode_table_record({**item_record(spec, str(first["item_id"])), "category": "mine"})
    items.write({str(first["item_id"]).encode(): kept})
    stop, produced = threading.Event(), [0]
    feeder = threading.Thread(
        target=feed_spool,
        args=(tmp_path, 20_000, 3, stop, produced),
        kwargs={"items": items},
    )
    feeder.start()
    stop.wait(0.4)
    stop.set()
    feeder.join(timeout=10)
    events = [
        json.loads(line)
        for path in tmp_path.glob(f"*{SUFFIX}")
        for line in path.read_bytes().splitlines()
    ]
    assert len(events) == produced[0] > 100
    ids = sorted({str(event["item_id"]) for event in events})
    stored = dict(zip(ids, items.get_many([i.encode() for i in ids]), strict=True))
    assert all(stored.values()), [i for i, value in stored.items() if value is None]
    assert stored[str(first["item_id"])] == kept
    other = next(i for i in ids if i != first["item_id"])
    assert stored[other] == encode_table_record(item_record(spec, other))


class CountingTable:
    """A table that counts the keys each ``get_many`` asks for."""

    def __init__(self, table: KeyValueTable) -> None:
        self.table = table
        self.asked: list[int] = []

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        self.asked.append(len(keys))
        return self.table.get_many(keys)

    def write(self, puts: Mapping[bytes, bytes], deletes: Sequence[bytes] = ()) -> None:
        self.table.write(puts, deletes)


def test_items_seen_before_are_not_looked_up_again() -> None:
    items = CountingTable(MemoryStore().table("items"))
    spec = WorkloadSpec(events=100, seed=3)
    chunk = next(iter_event_chunks(spec, chunk_size=50))
    known: set[str] = set()
    add_new_items(items, spec, chunk, known)  # type: ignore[arg-type]
    add_new_items(items, spec, chunk, known)  # type: ignore[arg-type]
    assert items.asked == [len({str(event["item_id"]) for event in chunk})]
