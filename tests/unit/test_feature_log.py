"""Feature log sinks on real files: JSON lines and Parquet (bounded buffer, rotation), what the
reader gives back, and settings that only make sense together."""

from __future__ import annotations

import os
import resource
import shutil
import signal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from usersignals.config import Settings
from usersignals.errors import ConfigurationError, InvalidSettingError
from usersignals.serving.feature_log import FeatureLog, build_sink, read_feature_log
from usersignals.serving.feature_records import FeatureLogRecord, LoggedAnswer
from usersignals.serving.feature_sinks import JsonlSink, ParquetSink
from usersignals.serving.reader import SignalResult, UserSignals
from waiting import wait_for


def answer(number: int) -> UserSignals:
    """An answer with values of several JSON shapes (a count, a list of objects, a float)."""
    counts = {"total": number, "by": {"save": number}}
    recent = [{"item_id": f"i{number}", "action": "save", "category": None}]
    return UserSignals(
        f"u{number % 4}",
        {
            "action_counts": SignalResult("action_counts", 1, "count", counts, None, None, None),
            "recent@2": SignalResult("recent", 2, "last_n", recent, 5, "t", 1),
            "taste": SignalResult("taste", 1, "mean_vector", [0.5, -1.25e-3], 5, "t", 1),
        },
    )


def expected(number: int) -> FeatureLogRecord:
    served = answer(number)
    signals = {
        k: LoggedAnswer(v.name, v.version, v.value, v.newest_event_ms)
        for k, v in served.signals.items()
    }
    params = {"window": "7d", "as_of": str(number)} if number % 2 else {}
    return FeatureLogRecord(served.user_id, 1_700_000_000_000 + number, params, signals)


def log_answers(log: FeatureLog, numbers: range) -> None:
    for number in numbers:
        record = expected(number)
        log.record(record.params, record.ts, answer(number))


def test_parquet_files_rotate_by_rows_and_hold_at_most_the_buffer_in_memory(
    tmp_path: Path,
) -> None:
    sink = ParquetSink(tmp_path, buffer_rows=3, rows_per_file=5)
    log = FeatureLog(sink, rate=1.0)
    for chunk, done in ((range(0, 6), 5), (range(6, 12), 10), (range(12, 14), 10)):
        log_answers(log, chunk)
        # The writer thread is handed each full buffer (of 3); requests never wait for it.
        # Rows count as written once their file is finished (5 a file).
        wait_for(lambda done=done: sink.counts.written == done, 10, "the rows written")
    wait_for(lambda: list(tmp_path.glob("*.parquet.tmp")), 10, "the third file")
    # Written at 3, 6, 9, 12 rows: two files of 5 finished, 2 rows in an unfinished file
    # (not read: no footer yet), 2 in memory.
    finished = sorted(tmp_path.glob("*.parquet"))
    assert len(finished) == 2
    assert len(list(tmp_path.glob("*.parquet.tmp"))) == 1
    assert read_feature_log(tmp_path) == [expected(n) for n in range(10)]
    assert (sink.counts.written, sink.counts.failed) == (10, 0)
    log.close()
    assert not list(tmp_path.glob("*.tmp"))
    assert read_feature_log(tmp_path) == [expected(n) for n in range(14)]
    assert read_feature_log(finished[0]) == [expected(n) for n in range(5)]
    assert sink.counts.written == 14


def test_jsonl_and_parquet_logs_in_one_directory_are_read_together(tmp_path: Path) -> None:
    jsonl = FeatureLog(JsonlSink(tmp_path), rate=1.0)
    log_answers(jsonl, range(3))
    jsonl.close()
    parquet = FeatureLog(ParquetSink(tmp_path, buffer_rows=10, rows_per_file=10), rate=1.0)
    log_answers(parquet, range(3, 5))
    parquet.close()
    records = read_feature_log(tmp_path)
    assert sorted(records, key=lambda r: r.ts) == [expected(n) for n in range(5)]


def test_unreadable_parquet_files_and_rows_are_skipped_and_named_like_jsonl_lines(
    tmp_path: Path,
) -> None:
    """Left open at the last stop: one unreadable Parquet file in a log directory (a copy cut
    short, say) stopped the consistency check, where a garbage JSON line is skipped and named;
    and a row whose answers are not JSON raised msgspec's error, outside the error tree."""
    parquet = FeatureLog(ParquetSink(tmp_path, buffer_rows=10, rows_per_file=10), rate=1.0)
    log_answers(parquet, range(3))
    parquet.close()
    (good,) = tmp_path.glob("*.parquet")
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(good.read_bytes()[:-100])
    table = pq.read_table(good)
    answers = table.column("signals").to_pylist()
    answers[1] = "{not json"
    damaged = table.set_column(
        table.schema.get_field_index("signals"), "signals", pa.array(answers)
    )
    pq.write_table(damaged, tmp_path / "damaged.parquet")
    unreadable: list[str] = []
    records = read_feature_log(tmp_path, unreadable)
    assert sorted(records, key=lambda r: r.ts) == [expected(n) for n in (0, 0, 1, 2, 2)]
    first, second = unreadable
    assert first.startswith("cut.parquet: ")
    assert second.startswith("damaged.parquet:2: ")
    with pytest.raises(ConfigurationError, match=r"cut\.parquet"):
        read_feature_log(tmp_path)  # without the list: an error, as for a JSONL line


def test_a_sink_that_cannot_write_counts_the_records_and_never_raises(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    parquet = ParquetSink(directory, buffer_rows=2, rows_per_file=4)
    shutil.rmtree(directory)  # the disk is gone from under the worker
    log = FeatureLog(parquet, rate=1.0)
    log_answers(log, range(5))
    log.close()
    assert (parquet.counts.written, parquet.counts.failed) == (0, 5)

    jsonl = JsonlSink(tmp_path / "closed")
    jsonl.close()
    FeatureLog(jsonl, rate=1.0).record({}, 1, answer(1))
    assert (jsonl.counts.written, jsonl.counts.failed) == (0, 1)


def test_a_missing_log_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no feature log"):
        read_feature_log(tmp_path / "nothing")


def settings(**serving: object) -> Settings:
    return Settings.load(environ={}, overrides={"serving": serving})


def test_the_sink_follows_the_settings(tmp_path: Path) -> None:
    assert build_sink(settings()) is None  # no path: no logging
    assert build_sink(settings(feature_log_path=str(tmp_path), feature_log_rate=0)) is None
    jsonl = build_sink(settings(feature_log_path=str(tmp_path)))
    assert isinstance(jsonl, JsonlSink)
    jsonl.close()
    parquet = build_sink(
        settings(
            feature_log_path=str(tmp_path),
            feature_log_sink="parquet",
            feature_log_buffer_rows=7,
            feature_log_rows_per_file=70,
        )
    )
    assert isinstance(parquet, ParquetSink)
    assert (parquet.buffer_rows, parquet.rows_per_file) == (7, 70)
    parquet.close()


@pytest.mark.parametrize(
    ("serving", "setting"),
    [
        ({"feature_log_sink": "csv"}, "serving.feature_log_sink"),
        ({"feature_log_sink": "kafka"}, "serving.feature_log_topic"),
        (
            {"feature_log_sink": "kafka", "feature_log_topic": "served"},
            "serving.feature_log_bootstrap_servers",
        ),
        (
            {"feature_log_buffer_rows": 11, "feature_log_rows_per_file": 10},
            "serving.feature_log_buffer_rows",
        ),
        ({"feature_log_rows_per_file": 0}, "serving.feature_log_rows_per_file"),
    ],
)
def test_feature_log_settings_that_cannot_work_are_refused_by_name(
    serving: dict[str, object], setting: str
) -> None:
    with pytest.raises(InvalidSettingError) as caught:
        settings(**serving)
    assert caught.value.setting == setting


def test_rows_a_full_disk_loses_are_counted_failed_and_leave_no_file(tmp_path: Path) -> None:
    """Found by the consistency trial, on a full disk: a file's row groups were counted
    written, then the file could not be finished (no footer: unreadable), so its rows were
    lost yet counted written; and every failed buffer left an empty ``.parquet.tmp``. Rows
    count as written once their file is finished; a file that cannot be is deleted."""
    sink = ParquetSink(tmp_path, buffer_rows=2, rows_per_file=4)
    for number in range(1, 4):  # every file this sink opens is a full disk
        (tmp_path / f"{sink._stem}-{number:05d}.parquet.tmp").symlink_to("/dev/full")
    log = FeatureLog(sink, rate=1.0)
    log_answers(log, range(6))
    log.close()
    assert (sink.counts.written, sink.counts.failed) == (0, 6)
    assert list(tmp_path.iterdir()) == []


def test_a_jsonl_sink_on_a_full_disk_counts_each_lost_record_and_closes_quietly(
    tmp_path: Path,
) -> None:
    """Found by the same trial: a failed line stayed in the file's buffer (counted failed,
    written later by the next flush), and closing the sink raised at shutdown."""
    (tmp_path / f"features-{os.getpid()}.jsonl").symlink_to("/dev/full")
    sink = JsonlSink(tmp_path)
    log = FeatureLog(sink, rate=1.0)
    log_answers(log, range(3))
    log.close()  # never raises
    assert (sink.counts.written, sink.counts.failed) == (0, 3)


def test_a_line_cut_short_is_taken_back_so_the_next_one_reads(tmp_path: Path) -> None:
    """Found by the review: a line cut short (the disk filled up mid-write) stayed in the
    file without its newline, and the next line, glued to it, was lost with it though
    counted written. A file-size limit plays the full disk: the write stops at it."""
    sink = JsonlSink(tmp_path)
    log = FeatureLog(sink, rate=1.0)
    log_answers(log, range(1))
    limit = sink.path.stat().st_size + 10
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        log_answers(log, range(1, 2))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    log_answers(log, range(2, 3))
    log.close()
    assert read_feature_log(tmp_path) == [expected(0), expected(2)]
    assert (sink.counts.written, sink.counts.failed) == (2, 1)


def test_a_finished_file_that_cannot_be_renamed_is_kept(tmp_path: Path) -> None:
    """Found by the review: a file whose footer was written but whose rename failed was
    deleted, and its readable rows counted failed. It is kept (as ``.tmp``)."""
    sink = ParquetSink(tmp_path, buffer_rows=2, rows_per_file=2)
    taken = tmp_path / f"{sink._stem}-00001.parquet"
    taken.mkdir()
    (taken / "something").write_text("x")  # a rename onto it fails
    log = FeatureLog(sink, rate=1.0)
    log_answers(log, range(2))
    log.close()
    assert (sink.counts.written, sink.counts.failed) == (2, 0)
    (kept,) = tmp_path.glob("*.parquet.tmp")
    assert pq.read_table(kept).column("user_id").to_pylist() == ["u0", "u1"]  # whole


def test_serve_refuses_a_parquet_log_without_pyarrow_before_its_workers_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the review: serve's check passed a Parquet sink without pyarrow, and every
    worker then failed at its start (the crash loop the check is there to prevent). Here
    pyarrow is made unimportable for the check."""
    import sys

    from usersignals.serving.feature_log import check_feature_log_sink

    monkeypatch.setitem(sys.modules, "pyarrow", None)
    configured = settings(feature_log_path=str(tmp_path), feature_log_sink="parquet")
    with pytest.raises(ConfigurationError, match="needs pyarrow"):
        check_feature_log_sink(configured)
