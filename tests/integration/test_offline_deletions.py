"""A user deletion in an archive (a topic export carries the ``{"op": "delete"}`` records the
stream applies) is applied offline too: backfill and the training set forget the user's
events before it, as the stream did, and never dead-letter it.

Found by the offline differential fuzz: both dead-lettered the deletion as an event missing
its fields, so a backfill brought a deleted user's events back into the store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from usersignals import ReadContext, SignalRegistry
from usersignals.assembly import open_store
from usersignals.config import Settings
from usersignals.offline import BackfillJob, backfill
from usersignals.offline.training import TrainingJob, training_set
from usersignals.serving.reader import SignalReader

NOW = 1_767_225_600_000
HOUR = 3_600_000
MODULE = """
from usersignals import Count, LastN, Signal
SIGNALS = [
    Signal(name="counts", version=1, aggregate=Count(by="action"), retention="28d"),
    Signal(name="recent", version=1, aggregate=LastN(10, keep="item_id"), retention="28d"),
]
"""
USERS = ("u1", "u2")


def event(number: int, user: str) -> dict[str, Any]:
    return {
        "event_id": f"e{number}", "user_id": user, "item_id": f"i{number}",
        "action": "click" if number % 2 else "save", "surface": "home", "ts": NOW + number * HOUR,
    }  # fmt: skip


def deletion(user: str) -> dict[str, Any]:
    return {"op": "delete", "user_id": user}


#: The history as the topic holds it: u1's first three events, then u1 deleted, then more.
#: e2 comes again after the deletion (a redelivery): no longer a repeat of a forgotten event.
HISTORY = [
    event(1, "u1"), event(2, "u1"), event(3, "u2"), event(4, "u1"),
    deletion("u1"),
    event(5, "u2"), event(6, "u1"), event(2, "u1"), event(7, "u1"),
]  # fmt: skip
#: What the stream kept: everything before u1's deletion but u2's events, forgotten.
KEPT = [HISTORY[2], *HISTORY[5:]]


def write_archive(path: Path, records: list[dict[str, Any]], envelope: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for offset, record in enumerate(records):
            value = json.dumps(record)
            if envelope:  # a Kafka export: one partition, as a producer keyed by user sends
                value = json.dumps(
                    {"topic": "t", "partition": 0, "offset": offset, "value": record}
                )
            handle.write(value + "\n")
    return path


def settings(root: Path, name: str) -> Settings:
    module = root / "deletion_signals.py"
    module.write_text(MODULE)
    overrides = {"signals": str(module), "store": {"path": str(root / name)}}
    return Settings.load(environ={}, overrides=overrides)


def served(config: Settings) -> dict[str, Any]:
    store = open_store(config)
    try:
        reader = SignalReader(SignalRegistry.from_module(config.signals), store)
        context = ReadContext(now_ms=NOW + 10 * HOUR)
        return {
            answer.user_id: {name: result.value for name, result in answer.signals.items()}
            for answer in reader.read_many(list(USERS), None, context)
        }
    finally:
        store.close()


def both_archives(root: Path, envelope: bool) -> tuple[Path, Path]:
    """The history as an archive, and what the stream kept of it as another."""
    return (
        write_archive(root / "history.jsonl", HISTORY, envelope),
        write_archive(root / "kept" / "history.jsonl", KEPT, envelope),
    )


#: Plain event rows, and a Kafka export's envelopes; one process and two.
SHAPES = pytest.mark.parametrize("envelope", [False, True], ids=["rows", "kafka-export"])
WORKERS = pytest.mark.parametrize("workers", [1, 2])


@SHAPES
@WORKERS
def test_backfill_forgets_the_events_before_a_deletion(
    tmp_path: Path, workers: int, envelope: bool
) -> None:
    archive, expected = both_archives(tmp_path, envelope)
    config, reference = settings(tmp_path, "store"), settings(tmp_path, "reference")
    dead = tmp_path / "dead.jsonl"
    summary = backfill(BackfillJob(str(archive), config, workers=workers, dead_letter=dead))
    backfill(BackfillJob(str(expected), reference, workers=workers))
    assert not dead.exists()  # the deletion is no bad event
    assert summary.bad == 0
    assert summary.deletions == 1
    values = served(config)
    assert values == served(reference)
    assert values["u1"]["counts"]["total"] == 3  # e6, e2 again, e7


@SHAPES
@WORKERS
def test_the_training_set_forgets_them_at_every_label_time(
    tmp_path: Path, workers: int, envelope: bool
) -> None:
    archive, expected = both_archives(tmp_path, envelope)
    labels = tmp_path / "labels.parquet"
    times = [NOW + hours * HOUR for hours in (1, 3, 4, 6, 9)]
    pq.write_table(pa.table({"user_id": ["u1"] * 5 + ["u2"], "ts": [*times, NOW + 9 * HOUR]}),
                   labels)  # fmt: skip
    out, reference = tmp_path / "features.parquet", tmp_path / "reference.parquet"
    dead = tmp_path / "dead.jsonl"
    config = settings(tmp_path, "store")
    summary = training_set(TrainingJob(labels, str(archive), config, out, workers=workers,
                                       dead_letter=dead))  # fmt: skip
    training_set(TrainingJob(labels, str(expected), config, reference, workers=workers))
    assert not dead.exists()
    assert summary.bad == 0
    assert summary.deletions == 1
    rows = pq.read_table(out).to_pylist()
    assert rows == pq.read_table(reference).to_pylist()
    # Before the deletion's own events, u1 had nothing left; at the end, e6, e2 and e7.
    assert json.loads(rows[0]["counts"])["total"] == 0
    assert json.loads(rows[4]["counts"])["total"] == 3


def test_a_user_cut_across_shards_forgets_them_in_every_shard(tmp_path: Path) -> None:
    """u1 alone is labelled, so the two shards share u1's labels: the shard that borrows
    u1's events must forget them too."""
    archive = write_archive(tmp_path / "history.jsonl", HISTORY, envelope=False)
    labels = tmp_path / "labels.parquet"
    times = [NOW + hours * HOUR for hours in (1, 3, 4, 6, 7, 8, 9, 10)]
    pq.write_table(pa.table({"user_id": ["u1"] * len(times), "ts": times}), labels)
    out = tmp_path / "features.parquet"
    job = TrainingJob(labels, str(archive), settings(tmp_path, "store"), out, workers=2)
    assert training_set(job).deletions == 1
    totals = [json.loads(row["counts"])["total"] for row in pq.read_table(out).to_pylist()]
    # e1, e2 and e4 forgotten: e6 at 6 h, e2 again (its own time, 2 h) and e7 at 7 h.
    assert totals == [0, 1, 1, 2, 3, 3, 3, 3]


def test_the_command_says_how_many_deletions_it_applied(tmp_path: Path) -> None:
    archive = write_archive(tmp_path / "history.jsonl", HISTORY, envelope=False)
    config = settings(tmp_path, "store")
    command = [str(Path(sys.executable).parent / "usersignals"), "backfill", "--events",
               str(archive), "--signals", config.signals, "--store", str(tmp_path / "store"),
               "--workers", "1"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    said = " ".join(done.stderr.split())  # the console wraps long lines
    assert "0 bad; 1 user deletions applied (their earlier events left out)" in said


def test_an_event_exported_after_its_deletion_in_a_later_file_stays_forgotten(
    tmp_path: Path,
) -> None:
    """Found by the review: an export laid out by event time put e1 (offset 0, stamped
    late) in a file after the one holding u1's deletion (offset 1); the backfill applied the
    deletion at its place in the archive, then e1, so the deleted event came back. A
    deletion forgets the events of its partition at lower offsets wherever the archive
    holds them."""
    late = {**event(1, "u1"), "ts": NOW + 20 * HOUR}
    records = [
        ("h01.jsonl", [(1, deletion("u1")), (2, event(6, "u1"))]),
        ("h05.jsonl", [(0, late)]),
    ]
    root = tmp_path / "archive"
    root.mkdir()
    for name, rows in records:
        lines = [
            json.dumps({"topic": "t", "partition": 0, "offset": offset, "value": value})
            for offset, value in rows
        ]
        (root / name).write_text("\n".join(lines) + "\n")
    config = settings(tmp_path, "store")
    summary = backfill(BackfillJob(str(root), config, workers=1))
    assert summary.deletions == 1
    assert served(config)["u1"]["counts"]["total"] == 1  # e6 only
