"""The embedded store: a serving worker's view of it (a RocksDB secondary on a temp dir), the
writer's memory report, a scratch store."""

from __future__ import annotations

import os
import re
import subprocess
import sys
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


def test_the_writer_reports_what_its_write_buffers_hold(tmp_path: Path) -> None:
    """bench/engine.py --rss prints it beside the RSS: the write buffers are RocksDB's
    largest moving part of a processor's memory."""
    store = RocksStore(tmp_path / "store")
    try:
        empty = store.write_buffer_bytes()
        store.write({f"u:{i}".encode(): bytes(1000) for i in range(2000)})
        assert store.write_buffer_bytes() >= empty + 2000 * 1000
    finally:
        store.close()


def test_a_scratch_store_skips_the_log_and_keeps_its_writes_once_closed(tmp_path: Path) -> None:
    """A backfill shard's store writes without the WAL (no log file grows); closing it
    writes the records out, so the loader that opens it next reads every one."""
    store = RocksStore(tmp_path / "shard", scratch=True)
    store.write({b"u:a": b"1", b"u:b": b"2"})
    store.table("t").write({b"k": b"v"})
    logs = list((tmp_path / "shard").glob("*.log"))
    assert logs
    assert all(log.stat().st_size == 0 for log in logs)
    store.close()
    reopened = RocksStore(tmp_path / "shard")
    try:
        assert reopened.get_many([b"u:a", b"u:b"]) == [b"1", b"2"]
        assert reopened.table("t").get(b"k") == b"v"
    finally:
        reopened.close()


# A SIGTERM that lands just after the reader's private directory is made: in
# TemporaryDirectory's constructor, before it has registered the finalizer that removes the
# directory; under an offline job's handling of SIGTERM (SystemExit, unwinding).
SIGTERM_AS_THE_DIRECTORY_IS_MADE = """
import signal, sys, tempfile
from pathlib import Path
from usersignals import RocksStore
from usersignals.offline.stopping import terminated_as_interrupted

made = tempfile.mkdtemp

def mkdtemp(*args, **kwargs):
    path = made(*args, **kwargs)
    signal.raise_signal(signal.SIGTERM)  # the handler runs before the next bytecode
    return path

tempfile.mkdtemp = mkdtemp
with terminated_as_interrupted():
    RocksStore(Path(sys.argv[1]), read_only=True)
"""


def test_a_reader_stopped_as_it_opens_leaves_no_directory(tmp_path: Path) -> None:
    """An offline job told to stop (SIGTERM) while a reader of the store opened left the
    reader's directory in the temp dir (seen once in the suite, under load): a stop landing
    inside ``TemporaryDirectory()``, after the directory is made and before its finalizer
    is, removes nothing. The stop now waits for the directory to be whole."""
    RocksStore(tmp_path / "store").close()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", SIGTERM_AS_THE_DIRECTORY_IS_MADE, str(tmp_path / "store")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TMPDIR": str(scratch)},
    )
    assert done.returncode == 143, done.stderr
    assert list(scratch.iterdir()) == []
