"""A serving worker's view of the embedded store: a RocksDB secondary on a temp dir."""

from __future__ import annotations

import re
from pathlib import Path

from usersignals import RocksStore


def test_a_reader_opens_table_files_on_its_catching_up_thread(tmp_path: Path) -> None:
    """Each catch-up with the writer runs RocksDB's table-loading step, which by default
    starts and joins 16 threads even when no file is new: 1.4-6 ms a refresh with the GIL
    held (bench/catch_up.py), a stall of the worker's event loop. The reader opens its
    files with one thread; RocksDB's info log shows the option in force."""
    writer = RocksStore(tmp_path / "store")
    writer.write({b"u:a": b"1"})
    reader = RocksStore(tmp_path / "store", read_only=True)
    try:
        assert reader.secondary_path is not None
        log = (reader.secondary_path / "LOG").read_text()
        assert re.findall(r"Options\.max_file_opening_threads: (\d+)$", log, re.M) == ["1"]
        reader.refresh()
        assert reader.get_many([b"u:a"]) == [b"1"]
        assert reader.get_many([b"u:b"]) == [None]
        assert reader.get_many([b"u:a", b"u:b"]) == [b"1", None]
    finally:
        reader.close()
        writer.close()
