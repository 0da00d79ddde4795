"""A backfill shard's records as a RocksDB table file, moved into the store: the file's
values replace the stored ones, other keys stay, and no records make no file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from usersignals.errors import StoreError
from usersignals.state.rocks import RocksStore, write_sorted_file


def test_a_table_file_replaces_the_stored_values_of_its_keys(tmp_path: Path) -> None:
    store = RocksStore(tmp_path / "store")
    try:
        store.write({b"u:a": b"old a", b"u:z": b"kept"})
        file = tmp_path / "shard.sst"
        assert write_sorted_file(file, [(b"u:a", b"new a"), (b"u:b", b"new b")]) == 2
        store.ingest([file])
        assert store.get_many([b"u:a", b"u:b", b"u:z"]) == [b"new a", b"new b", b"kept"]
        store.write({b"u:b": b"written after"})  # the store goes on as before
        assert store.get_many([b"u:b"]) == [b"written after"]
    finally:
        store.close()
    reopened = RocksStore(tmp_path / "store")
    try:
        assert reopened.get_many([b"u:a", b"u:b"]) == [b"new a", b"written after"]
    finally:
        reopened.close()


def test_no_records_make_no_file(tmp_path: Path) -> None:
    assert write_sorted_file(tmp_path / "none.sst", []) == 0
    assert not (tmp_path / "none.sst").exists()


def test_keys_out_of_order_are_a_store_error_and_the_records_own_errors_pass(
    tmp_path: Path,
) -> None:
    with pytest.raises(StoreError, match="ascending"):
        write_sorted_file(tmp_path / "a.sst", [(b"u:b", b"1"), (b"u:a", b"2")])

    def failing() -> Iterator[tuple[bytes, bytes]]:
        yield b"u:a", b"1"
        raise ValueError("a record the caller could not make")

    with pytest.raises(ValueError, match="could not make"):
        write_sorted_file(tmp_path / "b.sst", failing())
