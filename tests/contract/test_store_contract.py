"""The store contract: every state backend must pass this suite unchanged.

Backends are listed in the ``store`` fixture; each test gets a fresh, empty store.
"""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lock_holder import metadata_lock_held
from usersignals import RocksStore, StateStore
from usersignals.errors import StoreError
from usersignals.state import store as state_store
from usersignals.state.memory import MemoryStore
from usersignals.state.redis import RedisClusterStore, RedisStore
from usersignals.state.store import KeyValueTable


@pytest.fixture(params=["rocksdb", "memory", "redis", "redis-cluster"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    backend: StateStore
    if request.param == "rocksdb":
        backend = RocksStore(tmp_path / "store")
    elif request.param == "memory":
        backend = MemoryStore()
    elif request.param == "redis":
        # A namespace per test: one server, no test sees another's keys.
        url = request.getfixturevalue("redis_url")
        backend = RedisStore(url, namespace=f"t{uuid.uuid4().hex[:12]}")
    else:
        url = request.getfixturevalue("redis_cluster_url")
        backend = RedisClusterStore(url, namespace=f"t{uuid.uuid4().hex[:12]}")
    yield backend
    backend.close()


def test_satisfies_the_protocol(store: StateStore) -> None:
    assert isinstance(store, StateStore)
    assert isinstance(store.table("t"), KeyValueTable)


def test_get_many_keeps_order_and_reports_absent_keys(store: StateStore) -> None:
    store.write({b"u:a": b"1", b"u:b": b"2"})
    assert store.get_many([b"u:b", b"u:missing", b"u:a"]) == [b"2", None, b"1"]
    assert store.get_many([]) == []


def test_write_applies_puts_and_deletes_together(store: StateStore) -> None:
    store.write({b"u:a": b"1", b"u:b": b"2"})
    store.write({b"u:c": b"3", b"u:a": b"1b"}, deletes=[b"u:b"])
    assert store.get_many([b"u:a", b"u:b", b"u:c"]) == [b"1b", None, b"3"]


def test_values_are_arbitrary_bytes(store: StateStore) -> None:
    blob = bytes(range(256)) * 64
    store.write({b"u:\x00\xff": blob, b"u:empty": b""})
    assert store.get_many([b"u:\x00\xff", b"u:empty"]) == [blob, b""]


def test_scan_returns_a_prefix_in_key_order(store: StateStore) -> None:
    store.write({b"u:2": b"b", b"u:1": b"a", b"m:x": b"meta", b"u:3": b"c"})
    assert list(store.scan(b"u:")) == [(b"u:1", b"a"), (b"u:2", b"b"), (b"u:3", b"c")]


def test_tables_are_separate_namespaces(store: StateStore) -> None:
    store.write({b"k": b"state"})
    items = store.table("items")
    items.write({b"k": b"item"})
    assert store.get_many([b"k"]) == [b"state"]
    assert items.get_many([b"k"]) == [b"item"]
    assert store.table("items").get_many([b"k"]) == [b"item"]
    assert store.table("other").get_many([b"k"]) == [None]


def test_large_batches_round_trip(store: StateStore) -> None:
    """A read of many keys, out of order and absent ones among them (a store may read them
    in several calls), answers each in its place."""
    puts = {f"u:{i:06d}".encode(): f"{i}".encode() * 10 for i in range(20_000)}
    store.write(puts)
    keys = [*puts, *(f"u:absent{i}".encode() for i in range(3_000))]
    random.Random(5).shuffle(keys)
    assert store.get_many(keys) == [puts.get(key) for key in keys]


READER = textwrap.dedent(
    """
    import sys, time
    from usersignals import RocksStore
    reader = RocksStore(sys.argv[1], read_only=True)
    print("ready", flush=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        reader.refresh()
        if reader.get_many([b"u:new"])[0] == b"fresh":
            print("seen", flush=True)
            break
        time.sleep(0.005)
    reader.close()
    """
)


def test_the_metadata_lock_has_one_holder_at_a_time(store: StateStore) -> None:
    """A second command asking for the lock waits until the first lets it go, on threads
    of their own (Redis: as two processes would, each its own lock token)."""
    events: list[str] = []
    holding = threading.Event()

    def first() -> None:
        with store.metadata_lock():
            events.append("first in")
            holding.set()
            time.sleep(0.3)
            events.append("first out")

    thread = threading.Thread(target=first)
    thread.start()
    assert holding.wait(10)
    with store.metadata_lock():
        events.append("second in")
    thread.join()
    assert events == ["first in", "first out", "second in"]
    with store.metadata_lock():  # and it is free again
        pass


def test_a_command_that_cannot_get_the_metadata_lock_fails_naming_it(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state_store, "METADATA_LOCK_WAIT_S", 0.2)
    with (
        metadata_lock_held(store),
        pytest.raises(StoreError, match=r"metadata lock .* for over 0\.2 s"),
        store.metadata_lock(),
    ):
        pass


def test_a_reader_in_another_process_sees_new_writes_quickly(tmp_path: Path) -> None:
    """Serving workers run in other processes: they must see committed state in well under
    the 1 s freshness budget."""
    path = tmp_path / "store"
    writer = RocksStore(path)
    writer.write({b"u:old": b"x"})
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert reader.stdout is not None
        assert reader.stdout.readline().strip() == "ready"
        written = time.monotonic()
        writer.write({b"u:new": b"fresh"})
        assert reader.stdout.readline().strip() == "seen"
        assert time.monotonic() - written < 1.0
        assert reader.wait(timeout=10) == 0
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
        if reader.stdout is not None:
            reader.stdout.close()  # an unclosed pipe is a ResourceWarning, an error here
        writer.close()


def test_a_reader_cannot_open_a_missing_table(tmp_path: Path) -> None:
    from usersignals import StoreError

    writer = RocksStore(tmp_path / "store")
    reader = RocksStore(tmp_path / "store", read_only=True)
    try:
        with pytest.raises(StoreError, match="no table 'nope'"):
            reader.table("nope")
    finally:
        reader.close()
        writer.close()


def test_a_memory_store_refuses_use_after_close() -> None:
    from usersignals import StoreError

    store = MemoryStore()
    store.write({b"u:a": b"1"})
    store.close()
    with pytest.raises(StoreError, match="memory store read failed: the store is closed"):
        store.get_many([b"u:a"])


def test_a_memory_store_write_with_a_bad_value_changes_nothing() -> None:
    from usersignals import StoreError

    store = MemoryStore()
    with pytest.raises(StoreError, match="values must be bytes"):
        store.write({b"u:a": b"1", b"u:b": "text"}, deletes=[b"u:c"])  # type: ignore[dict-item]
    assert store.get_many([b"u:a"]) == [None]
