"""The engine on a real RocksDB: idempotent replay, canonical state, late events, bad input."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from usersignals import (
    Engine,
    Event,
    MicroBatch,
    Position,
    ReadContext,
    RocksStore,
    SignalRegistry,
    days,
)
from usersignals.enrich import Materializer, TableSource
from usersignals.enrich.sources import encode_table_record
from usersignals.events import EventDecoder, EventPolicy
from usersignals.ingest.dead_letter import DeadLetterFile
from usersignals.ingest.files import JsonlSource
from usersignals.ingest.synthetic import WorkloadSpec, item_records, iter_event_chunks
from usersignals.processing.replay import replay_file
from usersignals.serving import SignalReader

BASE = 1_767_225_600_000
REFERENCE = "usersignals.examples.reference"


def reference_events(n: int, seed: int = 3) -> list[Event]:
    spec = WorkloadSpec(events=n, seed=seed, users=300, items=2_000, start_ms=BASE)
    return [
        Event(**record)  # type: ignore[arg-type]
        for chunk in iter_event_chunks(spec, chunk_size=5_000)
        for record in chunk
    ]


def open_engine(path: Path, events: list[Event], module: str = REFERENCE) -> Engine:
    store = RocksStore(path)
    items = store.table("items")
    spec = WorkloadSpec(seed=3, users=300, items=2_000)
    ids = sorted({event.item_id for event in events})
    records = list(item_records(spec, ids))
    # Leave some items out of the table: their events must still count, with fields missing.
    items.write({str(r["item_id"]).encode(): encode_table_record(r) for r in records[5:]})
    registry = SignalRegistry.from_module(module)
    return Engine(registry, store, Materializer({"items": TableSource("items", items)}))


def run(engine: Engine, events: list[Event], positions: list[Position], size: int) -> None:
    for start in range(0, len(events), size):
        engine.process(MicroBatch(events[start : start + size], positions[start : start + size]))


def records(store: RocksStore) -> dict[bytes, bytes]:
    return dict(store.scan(b"u:"))


@pytest.fixture
def workload() -> tuple[list[Event], list[Position]]:
    events = reference_events(6_000)
    return events, [Position("topic/0", offset) for offset in range(len(events))]


def test_replaying_a_batch_changes_nothing(tmp_path: Path, workload) -> None:  # type: ignore[no-untyped-def]
    events, positions = workload
    engine = open_engine(tmp_path / "a", events)
    try:
        first = engine.process(MicroBatch(events, positions))
        before = records(engine.store)  # type: ignore[arg-type]
        again = engine.process(MicroBatch(events, positions))
        assert again.duplicates == len(events)
        assert again.users == 0
        assert records(engine.store) == before  # type: ignore[arg-type]
        assert first.users == len({event.user_id for event in events})
    finally:
        engine.store.close()


def test_state_is_identical_whatever_the_batches_and_redeliveries(tmp_path: Path, workload) -> None:  # type: ignore[no-untyped-def]
    """A crash and restart re-delivers a suffix of the stream in other batches; the result
    must equal one clean pass, byte for byte, for every user and signal."""
    events, positions = workload
    clean = open_engine(tmp_path / "clean", events)
    crashed = open_engine(tmp_path / "crashed", events)
    try:
        run(clean, events, positions, 6_000)
        rng = random.Random(5)
        offset = 0
        while offset < len(events):
            size = rng.randint(1, 900)
            crashed.process(
                MicroBatch(events[offset : offset + size], positions[offset : offset + size])
            )
            # Now and then "crash": go back some way, as an uncommitted consumer would.
            offset = max(0, offset + size - rng.choice([0, 0, 0, rng.randint(1, 1_500)]))
        assert records(crashed.store) == records(clean.store)  # type: ignore[arg-type]
    finally:
        clean.store.close()
        crashed.store.close()


def test_reads_reflect_every_event_and_missing_enrichment_is_counted(
    tmp_path: Path, workload
) -> None:  # type: ignore[no-untyped-def]
    events, positions = workload
    engine = open_engine(tmp_path / "a", events)
    try:
        report = engine.process(MicroBatch(events, positions))
        assert report.missing_enrichment.get("items", 0) > 0
        reader = SignalReader(engine.registry, engine.store)
        user = events[0].user_id
        mine = [event for event in events if event.user_id == user]
        newest = max(event.ts for event in mine)
        context = ReadContext(window_ms=days(28), now_ms=newest)
        result = reader.read(user, ["action_counts", "recent_engagements"], context)
        counts = result.signals["action_counts"].value
        assert counts["total"] == len(mine)
        assert result.signals["action_counts"].newest_event_ms == newest
        engaged = [event for event in mine if event.action != "impression"]
        entries = result.signals["recent_engagements"].value
        assert len(entries) == min(500, len(engaged))
        assert entries[0]["ts"] == max(event.ts for event in engaged)
    finally:
        engine.store.close()


def test_late_events_land_in_their_bucket_and_too_old_ones_are_dropped(tmp_path: Path) -> None:
    module = tmp_path / "late_signals.py"
    module.write_text(
        "from usersignals import Count, LastN, Signal, days\n"
        "late = Signal(name='late', version=1, aggregate=Count(by=('action',)),"
        " retention=days(2))\n"
        "seq = Signal(name='seq', version=1, aggregate=LastN(10), retention=days(2))\n"
    )
    store = RocksStore(tmp_path / "s")
    engine = Engine(SignalRegistry.from_module(str(module)), store)
    try:
        now = BASE + days(10)
        on_time = Event("e1", "u", "i1", "click", "home", now)
        late = Event("e2", "u", "i2", "save", "home", now - days(1))  # late, within retention
        # Beyond the retention and the 2-day as_of look-back: not even stored.
        too_old = Event("e3", "u", "i3", "save", "home", now - days(5))
        report = engine.process(MicroBatch([on_time], [Position("p", 1)]))
        report = engine.process(MicroBatch([late, too_old], [Position("p", 2), Position("p", 3)]))
        assert report.expired == {"late@1": 1, "seq@1": 1}
        reader = SignalReader(engine.registry, store)
        last_day = reader.read(
            "u", ["late"], ReadContext(window_ms=days(1) + 3_600_000, now_ms=now)
        )
        assert last_day.signals["late"].value == {"total": 2, "by": {"click": 1, "save": 1}}
        last_hour = reader.read("u", ["late"], ReadContext(window_ms=3_600_000, now_ms=now))
        assert last_hour.signals["late"].value == {"total": 1, "by": {"click": 1}}
        sequence = reader.read("u", ["seq"], ReadContext(now_ms=now)).signals["seq"].value
        assert [entry["item_id"] for entry in sequence] == ["i1", "i2"]
    finally:
        store.close()


def test_a_new_version_starts_empty_and_drops_the_old_state(tmp_path: Path) -> None:
    v1 = tmp_path / "v1.py"
    v1.write_text(
        "from usersignals import Count, Signal\n"
        "c = Signal(name='c', version=1, aggregate=Count())\n"
    )
    v2 = tmp_path / "v2.py"
    v2.write_text(
        "from usersignals import Count, Signal\n"
        "c = Signal(name='c', version=2, aggregate=Count())\n"
    )
    store = RocksStore(tmp_path / "s")
    try:
        Engine(SignalRegistry.from_module(str(v1)), store).process(
            MicroBatch([Event("e1", "u", "i", "click", "home", BASE)], [Position("p", 1)])
        )
        engine = Engine(SignalRegistry.from_module(str(v2)), store)
        engine.process(
            MicroBatch([Event("e2", "u", "i", "save", "home", BASE + 1)], [Position("p", 2)])
        )
        from usersignals.state import decode_record

        ((key, raw),) = list(store.scan(b"u:"))
        assert sorted(decode_record(key, raw).states) == ["c@2"]
        value = SignalReader(engine.registry, store).read("u", None, ReadContext(now_ms=BASE + 1))
        assert value.signals["c"].value == {"total": 1, "by": {"save": 1}}
    finally:
        store.close()


def test_a_replay_with_bad_events_applies_every_good_one_and_reports_every_bad_one(
    tmp_path: Path,
) -> None:
    good = [
        Event(f"e{i}", f"u{i % 3}", f"i{i}", "click", "home", BASE + i * 1000) for i in range(30)
    ]
    from usersignals.events import encode_events

    lines = encode_events(good).splitlines(keepends=True)
    head = b'{"event_id":"x","item_id":"i","action":"click","surface":"home",'
    bad_lines = {
        3: b"{not json\n",
        7: b'{"event_id": "x", "user_id": "u1"}\n',
        11: head + b'"user_id":"u1","ts":"soon"}\n',
        19: head + b'"user_id":"u1","ts":99999999999999}\n',
        23: head + b'"user_id":"","ts":1767225600000}\n',
    }
    for index in sorted(bad_lines, reverse=True):
        lines.insert(index, bad_lines[index])
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(lines))
    module = tmp_path / "signals.py"
    module.write_text(
        "from usersignals import Count, Signal, days\n"
        "c = Signal(name='c', version=1, aggregate=Count(), retention=days(30))\n"
    )
    store = RocksStore(tmp_path / "s")
    engine = Engine(SignalRegistry.from_module(str(module)), store)
    try:
        with DeadLetterFile(tmp_path / "dead.jsonl") as dead:
            summary = replay_file(
                JsonlSource(path, block_size=7), EventDecoder(EventPolicy()), engine, dead
            )
        assert summary.report.events == 30
        assert summary.bad_by_reason == {
            "malformed_json": 1,
            "missing_field": 1,
            "wrong_type": 1,
            "time_out_of_range": 1,
            "invalid_value": 1,
        }
        bad_line_numbers = [n for n, line in enumerate(lines, 1) if line in bad_lines.values()]
        assert sorted(bad.position.offset for bad in summary.bad_kept if bad.position) == (
            bad_line_numbers
        )
        reader = SignalReader(engine.registry, store)
        totals = [
            reader.read(f"u{u}", None, ReadContext(now_ms=BASE + 60_000))
            .signals["c"]
            .value["total"]
            for u in range(3)
        ]
        assert totals == [10, 10, 10]
        dead_lines = (tmp_path / "dead.jsonl").read_text().splitlines()
        assert len(dead_lines) == 5
        assert all('"reason"' in line and '"offset"' in line for line in dead_lines)
    finally:
        store.close()
