"""A user with an event nearly every millisecond: a ``Count`` keeps its newest exact entries."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

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
EXACT_ENTRIES = 2_048  # windowed.EXACT_ENTRIES, as the README documents it
ACTIONS = ["impression", "closeup", "click", "save", "share", "hide"]
SURFACES = ["home", "search", "related", "board"]

COUNTS = Signal(
    name="counts", version=1, aggregate=Count(by=("action", "surface")), retention=days(30)
)


@pytest.mark.parametrize(
    ("step_ms", "per_time"),
    [(100, 1), (500, 24)],
    ids=["an event every 100 ms", "24 groups at each time, every 500 ms"],
)
def test_a_hot_users_count_keeps_its_newest_exact_entries_and_tiles_the_rest(
    tmp_path: Path, step_ms: int, per_time: int
) -> None:
    """Found with bench/processor_feed.py: the feed's top users (an event nearly every
    millisecond, stamped in bursts of one time) grew their Count by an entry per event and
    group for two days, rewritten whole in each of their batches (114 KB after 150 s), and
    the processor fell behind. The newest EXACT_ENTRIES entries stay exact, whole times
    only; older events go into their tiles: a window that starts at or after the boundary is
    exact, an older start counts its tile whole."""
    engine = Engine(SignalRegistry([COUNTS]), RocksStore(tmp_path), dedupe_horizon_ms=None)
    times = 3 * EXACT_ENTRIES // per_time
    events = [
        Event(f"e{n}", "u1", f"i{n}", ACTIONS[n % 6], SURFACES[n // 6 % 4], BASE + t * step_ms)
        for t in range(times)
        for n in range(t * per_time, (t + 1) * per_time)
    ]
    try:
        for start in range(0, len(events), 2_500):
            batch = events[start : start + 2_500]
            positions = [Position("p/0", start + n) for n in range(len(batch))]
            engine.process(MicroBatch(batch, positions))
        stored = engine.store.get_many([user_key("u1")])[0] or b""
        raw = decode_record(user_key("u1"), stored).states[COUNTS.key]
        state = msgspec.msgpack.decode(raw, type=bytes)  # a state is stored as msgpack bin
        plans = core.NativePlans([plan_json(COUNTS)])
        _, cells, exact, exact_from = plans.decode_tiles(0, state)
        kept_times = EXACT_ENTRIES // per_time  # whole times only
        assert len(exact) == kept_times * per_time
        assert exact_from == BASE + (times - kept_times - 1) * step_ms + 1
        assert sum(value for _, _, value in [*cells, *exact]) == len(events)

        reader = SignalReader(engine.registry, engine.store)

        def total(since_ms: int) -> int:
            context = ReadContext(since_ms=since_ms, now_ms=BASE + times * step_ms)
            answer = reader.read("u1", ["counts"], context).signals["counts"].value
            assert isinstance(answer, dict)
            return int(answer["total"])

        oldest_exact = BASE + (times - kept_times) * step_ms
        assert total(oldest_exact) == kept_times * per_time
        assert total(oldest_exact + 1) == (kept_times - 1) * per_time
        # A start inside the minute tile [60 s, 120 s): the tile is counted whole.
        minute = 60_000
        assert total(BASE + minute + 50) == (times - minute // step_ms) * per_time
    finally:
        engine.store.close()
