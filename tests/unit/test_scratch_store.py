"""A backfill shard's private store: the same answers in memory and after its records move to
RocksDB (over the budget or for another process), side tables included."""

from __future__ import annotations

from pathlib import Path

import pytest

from usersignals.offline.scratch import ScratchStore
from usersignals.state.rocks import RocksStore


def _fill(store: ScratchStore) -> None:
    store.write({b"u:b": b"1" * 10, b"u:a": b"2" * 10, b"v:x": b"versions"})
    store.table("raw").write({b"r:1": b"event"})
    store.write({b"u:c": b"3" * 10}, deletes=[b"u:b"])


def _expect_filled(store: ScratchStore) -> None:
    assert store.get_many([b"u:a", b"u:b", b"u:c", b"u:d"]) == [b"2" * 10, None, b"3" * 10, None]
    assert list(store.scan(b"u:")) == [(b"u:a", b"2" * 10), (b"u:c", b"3" * 10)]
    assert store.table("raw").get_many([b"r:1"]) == [b"event"]
    assert list(store.table("raw").scan()) == [(b"r:1", b"event")]


@pytest.mark.parametrize("budget", [1 << 20, 40], ids=["in-memory", "spills-mid-way"])
def test_answers_the_same_in_memory_and_after_moving_to_disk(tmp_path: Path, budget: int) -> None:
    store = ScratchStore(tmp_path / "shard", budget_bytes=budget)
    try:
        raw = store.table("raw")  # taken before any write, as the engine does
        _fill(store)
        _expect_filled(store)
        # The first write (37 bytes of keys and values) fits a 40-byte budget; the side
        # table's (8 more) does not: it moves everything to RocksDB, and what follows goes
        # there too.
        assert store.on_disk == (budget == 40)
        assert (tmp_path / "shard" / "CURRENT").exists() == (budget == 40)
        raw.write({b"r:2": b"later"})
        assert raw.get_many([b"r:2"]) == [b"later"]
    finally:
        store.close()


def test_nothing_touches_the_disk_within_the_budget(tmp_path: Path) -> None:
    store = ScratchStore(tmp_path / "shard")
    try:
        _fill(store)
        assert not store.on_disk
        assert not (tmp_path / "shard").exists()
    finally:
        store.close()


def test_persisted_records_are_read_by_a_store_opened_after_close(tmp_path: Path) -> None:
    # A Redis deployment's shards: the parent opens each shard's directory once it is done.
    store = ScratchStore(tmp_path / "shard")
    _fill(store)
    store.persist()
    assert store.on_disk
    store.persist()  # once is enough: a second call changes nothing
    _expect_filled(store)
    store.close()
    reopened = RocksStore(tmp_path / "shard")
    try:
        assert list(reopened.scan(b"u:")) == [(b"u:a", b"2" * 10), (b"u:c", b"3" * 10)]
        assert reopened.table("raw").get_many([b"r:1"]) == [b"event"]
    finally:
        reopened.close()
