"""A user with an event nearly every millisecond: a ``Count`` keeps its newest exact times."""

from __future__ import annotations

from pathlib import Path

import msgspec

import usersignals._core as core
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
)
from usersignals.processing.native import plan_json
from usersignals.serving import SignalReader
from usersignals.state.codec import decode_record
from usersignals.state.keys import user_key

BASE = 1_767_225_600_000
EXACT_TIMES = 2_048  # windowed.EXACT_TIMES, as the README documents it
MINUTE = 60_000
STEP = 100  # ms between the user's events: 600 a minute tile

COUNTS = Signal(name="counts", version=1, aggregate=Count(by=("action",)), retention=days(30))


def clicks(first: int, last: int) -> list[Event]:
    return [
        Event(f"e{n}", "u1", f"i{n}", ("click", "save")[n % 2], "home", BASE + n * STEP)
        for n in range(first, last)
    ]


def test_a_hot_users_count_keeps_its_newest_exact_times_and_tiles_the_rest(tmp_path: Path) -> None:
    """Found with bench/processor_feed.py: the feed's top users (an event nearly every
    millisecond) grew their Count by an entry per event for two days, rewritten whole in
    each of their batches (70 KB after a minute), and the processor fell behind. The newest
    EXACT_TIMES distinct times stay exact; older events go into their tiles: a window that
    starts at or after the oldest exact time is exact, an older start counts its tile whole."""
    engine = Engine(SignalRegistry([COUNTS]), RocksStore(tmp_path), dedupe_horizon_ms=None)
    events = 3 * EXACT_TIMES
    try:
        for start in range(0, events, 2_500):
            batch = clicks(start, min(start + 2_500, events))
            positions = [Position("p/0", start + n) for n in range(len(batch))]
            engine.process(MicroBatch(batch, positions))
        stored = engine.store.get_many([user_key("u1")])[0] or b""
        raw = decode_record(user_key("u1"), stored).states[COUNTS.key]
        state = msgspec.msgpack.decode(raw, type=bytes)  # a state is stored as msgpack bin
        _, cells, exact = core.NativePlans([plan_json(COUNTS)]).decode_tiles(0, state)
        assert len({ts for ts, _, _ in exact}) == EXACT_TIMES
        assert sum(value for _, _, value in [*cells, *exact]) == events

        reader = SignalReader(engine.registry, engine.store)

        def total(since_ms: int) -> int:
            context = ReadContext(since_ms=since_ms, now_ms=BASE + events * STEP)
            answer = reader.read("u1", ["counts"], context).signals["counts"].value
            assert isinstance(answer, dict)
            return int(answer["total"])

        oldest_exact = events - EXACT_TIMES
        assert total(BASE + oldest_exact * STEP) == EXACT_TIMES
        assert total(BASE + oldest_exact * STEP + 1) == EXACT_TIMES - 1
        # 1,000 events before the start; its minute tile [60 s, 120 s) holds events 600-1,199.
        assert total(BASE + 1_000 * STEP + 50) == events - 600
    finally:
        engine.store.close()
