"""The decoded-state cache is bounded by bytes, not entries (issue 9, item 11)."""

from __future__ import annotations

from pathlib import Path

import msgspec

from usersignals import Event, MicroBatch, Position, ReadContext
from usersignals.app import build_processor, open_store_reader
from usersignals.config import Settings, StoreSettings
from usersignals.state.cache import DECODED_BYTES_PER_STORED_BYTE, DecodedStateCache

PER_BYTE = DECODED_BYTES_PER_STORED_BYTE


def raw(size: int, fill: bytes = b"x") -> msgspec.Raw:
    return msgspec.Raw(fill * size)


def test_large_states_are_evicted_least_recently_used_first_to_stay_in_the_budget() -> None:
    cache = DecodedStateCache(min_bytes=10, max_bytes=3_000 * PER_BYTE)
    for user in range(5):
        cache.put(b"u%d" % user, "s", raw(1_000), {"user": user})
        assert cache.bytes <= cache.max_bytes
    assert len(cache) == 3  # 3 x 1,000 stored bytes fit; the two oldest went
    assert cache.get(b"u0", "s", raw(1_000)) is None
    assert cache.get(b"u2", "s", raw(1_000)) == {"user": 2}  # now the most recently used
    cache.put(b"u5", "s", raw(1_000), {"user": 5})
    assert cache.get(b"u3", "s", raw(1_000)) is None  # u3 was the least recently used
    assert cache.get(b"u2", "s", raw(1_000)) == {"user": 2}
    assert cache.bytes == 3_000 * PER_BYTE


def test_replacing_an_entry_counts_its_new_size_once() -> None:
    cache = DecodedStateCache(min_bytes=10, max_bytes=10_000 * PER_BYTE)
    cache.put(b"u", "s", raw(1_000), "old")
    cache.put(b"u", "s", raw(2_000, b"y"), "new")
    assert (len(cache), cache.bytes) == (1, 2_000 * PER_BYTE)
    assert cache.get(b"u", "s", raw(1_000)) is None  # other bytes: never a stale state
    assert cache.get(b"u", "s", raw(2_000, b"y")) == "new"


def test_small_states_and_states_larger_than_the_budget_are_not_cached() -> None:
    cache = DecodedStateCache(min_bytes=100, max_bytes=1_000 * PER_BYTE)
    cache.put(b"small", "s", raw(99), "small")
    cache.put(b"huge", "s", raw(1_001), "huge")
    assert (len(cache), cache.bytes) == (0, 0)


# The cache holds the states the per-user Python path decodes: every reference signal that
# counts is native now (read from the stored bytes, never cached), so this test's signal is a
# user-defined aggregation, which that path runs.
PYTHON_PATH_SIGNALS = """
from usersignals import Count, Signal, days


class PythonCount(Count):
    \"\"\"Count as a user-defined aggregation: not its exact type, so not native.\"\"\"


SIGNALS = [
    Signal(name="action_counts", version=1, aggregate=PythonCount(by=("action", "surface")),
           retention=days(28)),
]
"""


def test_a_serving_reader_keeps_its_cache_within_the_configured_bytes(tmp_path: Path) -> None:
    budget = 200_000
    module = tmp_path / "python_path_signals.py"
    module.write_text(PYTHON_PATH_SIGNALS)
    settings = Settings(store=StoreSettings(path=str(tmp_path / "store")), signals=str(module))
    settings.serving.state_cache_bytes = budget
    processor = build_processor(settings)
    try:
        now = 1_767_225_600_000
        # 60 users with a few hundred engagements each, a minute apart: count states of
        # several KB.
        events = [
            Event(f"e{u}-{n}", f"u{u}", f"i{n}", "click", "home", now - n * 60_000)
            for u in range(60)
            for n in range(300)
        ]
        positions = [Position("p", i) for i in range(len(events))]
        processor.engine.process(MicroBatch(events, positions))
    finally:
        processor.close()
    reader = open_store_reader(settings)
    try:
        for user in range(60):
            reader.read(f"u{user}", ["action_counts"], ReadContext(now_ms=now))
            assert reader.cache.bytes <= budget
        assert 0 < len(reader.cache) < 60  # some are cached; the budget holds no more
    finally:
        reader.store.close()
