"""``event_id`` is an idempotency key: a repeat within the horizon is dropped and counted."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usersignals import (
    Count,
    Engine,
    Event,
    LastN,
    MicroBatch,
    Position,
    ReadContext,
    RocksStore,
    Signal,
    SignalRegistry,
    days,
)
from usersignals.processing.dedupe import IDS_PER_HOUR, EventIdDedupe, merge_seen
from usersignals.state.codec import UserRecord, decode_record, encode_record
from usersignals.state.keys import user_key

BASE = 1_767_225_600_000
HOUR = 3_600_000

SIGNALS = [
    Signal(name="recent", version=1, aggregate=LastN(50), retention=days(30)),
    Signal(name="counts", version=1, aggregate=Count(by=("action",)), retention=days(30)),
]


def engine_at(path: Path, horizon_ms: int = 24 * HOUR) -> Engine:
    return Engine(SignalRegistry(SIGNALS), RocksStore(path), dedupe_horizon_ms=horizon_ms)


def event(event_id: str, ts: int, user: str = "u1", action: str = "click") -> Event:
    return Event(event_id, user, "i" + event_id, action, "home", ts)


def batch(events: list[Event], first_offset: int = 0, partition: str = "p/0") -> MicroBatch:
    positions = [Position(partition, first_offset + n) for n in range(len(events))]
    return MicroBatch(events, positions)


def total_clicks(engine: Engine, user: str = "u1", doubles: bool = False) -> int:
    from usersignals.serving import SignalReader

    answer = SignalReader(engine.registry, engine.store).read(
        user, ["counts", "recent"], ReadContext(as_of_ms=BASE + 48 * HOUR)
    )
    recent = answer.signals["recent"].value
    if not doubles:
        assert len({entry["item_id"] for entry in recent}) == len(recent), "a doubled entry"
    return int(answer.signals["counts"].value["total"])


def test_a_repeat_within_one_batch_is_dropped_and_counted(tmp_path: Path) -> None:
    engine = engine_at(tmp_path)
    try:
        report = engine.process(batch([event("a", BASE), event("b", BASE + 1), event("a", BASE)]))
        assert report.repeats == 1
        assert total_clicks(engine) == 2
    finally:
        engine.store.close()


def test_a_repeat_in_a_later_batch_is_dropped_and_still_advances_progress(
    tmp_path: Path,
) -> None:
    engine = engine_at(tmp_path)
    try:
        engine.process(batch([event("a", BASE), event("b", BASE + HOUR)]))
        retry = engine.process(batch([event("a", BASE)], first_offset=2))
        assert (retry.repeats, retry.duplicates) == (1, 0)
        assert total_clicks(engine) == 2
        record = decode_record(user_key("u1"), engine.store.get_many([user_key("u1")])[0] or b"")
        assert record.progress == {"p/0": 2}  # the repeat was consumed
    finally:
        engine.store.close()


def test_a_repeat_on_another_partition_is_dropped(tmp_path: Path) -> None:
    engine = engine_at(tmp_path)
    try:
        engine.process(batch([event("a", BASE)], partition="t/0"))
        report = engine.process(batch([event("a", BASE)], partition="t/1"))
        assert report.repeats == 1
        assert total_clicks(engine) == 1
    finally:
        engine.store.close()


def test_a_repeat_beyond_the_horizon_is_applied_again(tmp_path: Path) -> None:
    engine = engine_at(tmp_path, horizon_ms=2 * HOUR)
    try:
        engine.process(batch([event("a", BASE), event("b", BASE + 5 * HOUR)]))
        report = engine.process(batch([event("a", BASE)], first_offset=2))
        assert report.repeats == 0
        assert total_clicks(engine, doubles=True) == 3
    finally:
        engine.store.close()


def test_the_horizon_can_be_turned_off(tmp_path: Path) -> None:
    engine = engine_at(tmp_path, horizon_ms=0)
    try:
        report = engine.process(batch([event("a", BASE), event("a", BASE)]))
        assert report.repeats == 0
        assert total_clicks(engine, doubles=True) == 2
    finally:
        engine.store.close()


def test_old_fingerprints_are_pruned_so_memory_stays_bounded() -> None:
    dedupe = EventIdDedupe(24 * HOUR)
    seen: dict[int, bytes] = {}
    events = [event(f"e{n}", BASE + n * HOUR) for n in range(24 * 10)]
    for start in range(0, len(events), 7):
        _, seen = dedupe.admit(seen, events, range(start, min(start + 7, len(events))))
    assert len(seen) == 25  # the newest hour and the 24 before it
    assert all(len(blob) == 4 for blob in seen.values())


@pytest.mark.parametrize("native", [True, False], ids=["native", "python"])
def test_a_bots_hour_keeps_at_most_its_cap_of_ids_and_its_replay_applies_nothing(
    tmp_path: Path, native: bool
) -> None:
    """Found with bench/processor_feed.py: the feed's top user (4,200 events a second) grew a
    record of a MB of fingerprints a minute, rewritten whole in each batch of theirs. An hour
    now keeps IDS_PER_HOUR: a repeat of a recorded id is dropped, of one past the cap applied;
    replayed at or below the progress (a Kafka restart), the full hour's events are skipped."""
    engine = Engine(
        SignalRegistry(SIGNALS), RocksStore(tmp_path), dedupe_horizon_ms=24 * HOUR,
        native_pipeline=native,
    )  # fmt: skip
    try:
        bot = [event(f"e{n}", BASE + n) for n in range(IDS_PER_HOUR + 300)]
        engine.process(batch(bot[:5_000]))
        engine.process(batch(bot[5_000:], first_offset=5_000))
        stored = engine.store.get_many([user_key("u1")])[0] or b""
        assert [len(blob) for blob in decode_record(user_key("u1"), stored).seen.values()] == [
            4 * IDS_PER_HOUR
        ]
        again = [event("e0", BASE), event(f"e{len(bot) - 1}", BASE + len(bot) - 1)]
        assert engine.process(batch(again, first_offset=len(bot))).repeats == 1
        replay = engine.process(batch(bot), rewinds=True)
        assert (replay.duplicates, replay.rewound) == (len(bot), 0)
        assert total_clicks(engine, doubles=True) == len(bot) + 1
    finally:
        engine.store.close()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 30), st.integers(0, 40 * HOUR)), min_size=1, max_size=40),
    st.lists(st.integers(1, 39), max_size=5),
    st.sampled_from([1, 3, IDS_PER_HOUR]),
)
def test_dedupe_state_is_canonical_whatever_the_batch_split(
    lines: list[tuple[int, int]], cuts: list[int], ids_per_hour: int
) -> None:
    """Same lines in arrival order, any split: the same admitted events, the same bytes;
    whatever the cap of ids an hour keeps."""
    dedupe = EventIdDedupe(6 * HOUR, ids_per_hour)
    # A repeated id is a repeated line: the same event, so the same time.
    times: dict[int, int] = {}
    events = [event(f"e{n}", BASE + times.setdefault(n, ts)) for n, ts in lines]

    def run(bounds: list[int]) -> tuple[list[int], bytes]:
        seen: dict[int, bytes] = {}
        admitted: list[int] = []
        for start, end in itertools.pairwise(bounds):
            kept, seen = dedupe.admit(seen, events, range(start, end))
            admitted += kept
        return admitted, encode_record(UserRecord({}, {}, seen))

    whole = run([0, len(events)])
    split = run([0, *sorted({c for c in cuts if c < len(events)}), len(events)])
    assert split == whole


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 30), st.integers(0, 40 * HOUR)), max_size=30),
    st.lists(st.tuples(st.integers(0, 30), st.integers(0, 40 * HOUR)), max_size=30),
    st.sampled_from([0, 6 * HOUR, 24 * HOUR]),
)
def test_merged_fingerprints_are_what_one_engine_applying_both_keeps(
    first: list[tuple[int, int]], second: list[tuple[int, int]], horizon_ms: int
) -> None:
    """A backfill's fingerprints merged into the stored record's: the same as one engine
    applying the stored events, then the backfill's (the ids both carry are the same events)."""
    times: dict[int, int] = {}
    events = [event(f"e{n}", BASE + times.setdefault(n, ts)) for n, ts in first + second]
    one, other = range(len(first)), range(len(first), len(events))
    if not horizon_ms:  # dedupe off: the engine keeps what is stored, so does the merge
        stored = EventIdDedupe(6 * HOUR).admit({}, events, one)[1]  # (kept from before)
        computed = EventIdDedupe(6 * HOUR).admit({}, events, other)[1]
        merged = merge_seen(stored, computed, 0)
        for hour in {*stored, *computed}:
            union = _fingerprints(stored.get(hour, b"")) | _fingerprints(computed.get(hour, b""))
            assert _fingerprints(merged[hour]) == union
            assert merged[hour] == b"".join(sorted(f.to_bytes(4, "big") for f in union))
        assert set(merged) == {*stored, *computed}
        return
    dedupe = EventIdDedupe(horizon_ms)
    stored = dedupe.admit({}, events, one)[1]
    computed = dedupe.admit({}, events, other)[1]
    both = dedupe.admit(stored, events, other)[1]
    assert merge_seen(stored, computed, horizon_ms) == both
    assert merge_seen(computed, stored, horizon_ms) == both


def _fingerprints(blob: bytes) -> set[int]:
    return {int.from_bytes(blob[i : i + 4], "big") for i in range(0, len(blob), 4)}


def test_version_1_records_are_read_with_no_fingerprints() -> None:
    old = bytes([1]) + msgspec.msgpack.encode([{"p/0": 7}, {}])
    record = decode_record(b"u:x", old)
    assert (record.progress, record.seen) == ({"p/0": 7}, {})


def test_random_duplicated_lines_leave_the_same_state_as_no_duplicates(tmp_path: Path) -> None:
    rng = random.Random(5)
    unique = [event(f"e{n}", BASE + rng.randrange(20 * HOUR), user=f"u{n % 3}") for n in range(300)]
    noisy = unique + [rng.choice(unique) for _ in range(100)]
    rng.shuffle(noisy)
    clean, dirty = engine_at(tmp_path / "clean"), engine_at(tmp_path / "dirty")
    try:
        clean.process(batch(sorted(unique, key=lambda e: e.ts)))
        for start in range(0, len(noisy), 37):
            dirty.process(batch(noisy[start : start + 37], first_offset=start))
        for user in ("u0", "u1", "u2"):
            assert total_clicks(dirty, user) == total_clicks(clean, user)
    finally:
        clean.store.close()
        dirty.store.close()
