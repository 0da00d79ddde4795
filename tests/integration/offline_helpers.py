"""Random event histories, archives of them, and the streaming path they are compared with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from usersignals import Engine, Event, MicroBatch, Position, SignalRegistry
from usersignals.config import Settings
from usersignals.enrich import Materializer, TableSource
from usersignals.enrich.sources import encode_table_record
from usersignals.ingest.synthetic import WorkloadSpec, item_records, iter_event_chunks
from usersignals.offline.common import shard_of
from usersignals.offline.memory import MemoryStore
from usersignals.state.rocks import RocksStore
from usersignals.state.store import StateStore

REFERENCE = "usersignals.examples.reference"
TOPIC = "engagements"
PARTITIONS = 3
DAY_MS = 86_400_000
#: Bad records, for the dead letters: two name a user (they fall to that user's shard).
BAD = [
    b'{"event_id": "x", "user_id": "u1"}',
    b"not json",
    b'{"event_id":"","user_id":"u","item_id":"i","action":"save","surface":"home","ts":1767225600000}',
]


@dataclass
class History:
    """A random history in stream order, with the Kafka coordinates each event got."""

    spec: WorkloadSpec
    events: list[Event]
    positions: list[Position]
    items: list[dict[str, object]]


def random_history(seed: int, events: int = 1_500, users: int = 40) -> History:
    """Seeded, Pinterest-like, spread over 40 days with many late events (retention, expiry and
    decay all matter), keyed to partitions by user as a producer keyed by user does."""
    spec = WorkloadSpec(
        events=events, seed=seed, users=users, items=400, span_ms=40 * DAY_MS,
        late_fraction=0.2, max_late_ms=3 * DAY_MS,
    )  # fmt: skip
    decoded = [
        msgspec.convert(record, Event)
        for chunk in iter_event_chunks(spec, chunk_size=5_000)
        for record in chunk
    ]
    items = list(item_records(spec, sorted({event.item_id for event in decoded})))
    return History(spec, decoded, keyed_positions(decoded), items)


def keyed_positions(events: Sequence[Event]) -> list[Position]:
    """Kafka coordinates for events in stream order, the partition keyed by user."""
    offsets = [0] * PARTITIONS
    positions = []
    for event in events:
        partition = shard_of(event.user_id, PARTITIONS)
        positions.append(Position(f"{TOPIC}/{partition}", offsets[partition]))
        offsets[partition] += 1
    return positions


def redelivered(history: History, every: int, later: int | None = None) -> History:
    """The history with every ``every``-th event delivered again, as a producer's retry
    writes it: the same event at a later offset, ``later`` events after the original in
    stream order (``None``: at the end)."""
    copies: dict[int, list[Event]] = {}
    end = len(history.events) - 1
    for index in range(0, len(history.events), every):
        at = end if later is None else min(index + later, end)
        copies.setdefault(at, []).append(history.events[index])
    events = []
    for index, event in enumerate(history.events):
        events.append(event)
        events.extend(copies.get(index, ()))
    return History(history.spec, events, keyed_positions(events), history.items)


def load_items(store: StateStore, items: Sequence[dict[str, object]]) -> None:
    """The item table, less a few items (their events must still count, fields missing)."""
    store.table("items").write(
        {str(r["item_id"]).encode(): encode_table_record(r) for r in items[3:]}
    )


def new_store(path: Path, history: History) -> RocksStore:
    store = RocksStore(path)
    load_items(store, history.items)
    return store


def stream(
    store: StateStore,
    history: History,
    batch: int,
    registry: SignalRegistry | None = None,
    upto: int | None = None,
    horizon_ms: int = 86_400_000,
) -> None:
    """The live path: events in stream order, micro-batch after micro-batch, with their
    offsets; ``horizon_ms``: the processor's ``dedupe_horizon_ms``."""
    registry = registry or SignalRegistry.from_module(REFERENCE)
    materializer = Materializer({"items": TableSource("items", store.table("items"))})
    engine = Engine(registry, store, materializer, dedupe_horizon_ms=horizon_ms)
    end = len(history.events) if upto is None else upto
    for start in range(0, end, batch):
        stop = min(start + batch, end)
        engine.process(MicroBatch(history.events[start:stop], history.positions[start:stop]))


def retried_elsewhere(items: list[dict[str, object]]) -> History:
    """A user's event, a producer's retry of it written to another partition right after,
    then the user's next event three days later: the stream drops the retry (its original
    is within the horizon behind the newest event before it). The archive's partitions put
    the retry after every event of the user's own partition."""
    user = next(u for u in (f"u{n}" for n in range(100)) if shard_of(u, PARTITIONS) == 0)
    first = Event(
        event_id="e1", user_id=user, item_id=str(items[5]["item_id"]), action="save",
        surface="home", ts=1_767_225_600_000,
    )  # fmt: skip
    later = Event(
        event_id="e2", user_id=user, item_id=str(items[6]["item_id"]), action="click",
        surface="search", ts=first.ts + 3 * DAY_MS,
    )  # fmt: skip
    positions = [Position(f"{TOPIC}/0", 0), Position(f"{TOPIC}/1", 0), Position(f"{TOPIC}/0", 1)]
    spec = WorkloadSpec(events=3, seed=1, users=1, items=len(items))
    return History(spec, [first, first, later], positions, items)


def applied_by_the_stream(
    events: Sequence[Event],
    positions: Sequence[Position],
    items: Sequence[dict[str, object]],
    horizon_ms: int,
) -> list[int]:
    """The indices of the events the processor applies (stream order), with the dedupe
    horizon ``horizon_ms``: one micro-batch per event, so each batch's repeat count names
    the event it drops."""
    store = MemoryStore()
    load_items(store, items)
    source = TableSource("items", store.table("items"))
    registry = SignalRegistry.from_module(REFERENCE)
    engine = Engine(registry, store, Materializer({"items": source}), dedupe_horizon_ms=horizon_ms)
    return [
        index
        for index, (event, position) in enumerate(zip(events, positions, strict=True))
        if not engine.process(MicroBatch([event], [position])).repeats
    ]


def user_states(store: StateStore) -> dict[bytes, bytes]:
    return dict(store.scan(b"u:"))


def write_parquet_archive(
    root: Path, history: History, bad: Sequence[bytes] = (), period: str = "%Y-%m-%d"
) -> Path:
    """A data lake export of the topic: Hive partitions by event day, the Kafka coordinates
    on every row, ``value`` holding the message bytes (as the topic carried them).
    ``period`` formats the partition value (by month: fewer files, for the Spark tests)."""
    by_day: dict[str, list[dict[str, object]]] = {}
    for event, position in zip(history.events, history.positions, strict=True):
        topic, partition = position.partition.split("/")
        day = datetime.fromtimestamp(event.ts / 1000, tz=UTC).strftime(period)
        by_day.setdefault(day, []).append(
            {
                "topic": topic,
                "partition": int(partition),
                "offset": position.offset,
                "value": msgspec.json.encode(event),
            }
        )
    first = min(by_day)
    for number, raw in enumerate(bad):
        # Bad messages on a partition of their own, so the good offsets stay as streamed.
        by_day[first].append({"topic": TOPIC, "partition": 99, "offset": number, "value": raw})
    for day, rows in by_day.items():
        folder = root / f"dt={day}"
        folder.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), folder / "part-0.parquet")
    return root


def write_jsonl_archive(root: Path, history: History, files: int = 3) -> Path:
    """A plain export without coordinates: JSONL files of events."""
    root.mkdir(parents=True)
    size = -(-len(history.events) // files)
    for number in range(files):
        chunk = history.events[number * size : (number + 1) * size]
        (root / f"events-{number}.jsonl").write_bytes(
            b"".join(msgspec.json.encode(event) + b"\n" for event in chunk)
        )
    return root


def settings_for(store: Path, signals: str = REFERENCE, **processing: object) -> Settings:
    return Settings.load(
        environ={},
        overrides={"signals": signals, "store": {"path": str(store)}, "processing": processing},
    )
