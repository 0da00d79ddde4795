"""Offline, a user-defined aggregation's failure is contained as on the live path: backfill
(one and two processes) and the training set dead-letter the event it fails on with reason
``signal_failed`` and apply the rest (tests/unit/test_signal_failures.py has the live path
and the aggregation)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from usersignals import ReadContext, SignalReadError
from usersignals.config import Settings
from usersignals.offline import BackfillJob, backfill
from usersignals.offline.training import TrainingJob, training_set
from usersignals.serving.reader import SignalReader

NOW = 1_767_225_600_000
UNIT_TESTS = Path(__file__).resolve().parent.parent / "unit"


def faulty_module(root: Path) -> Path:
    module = root / "faulty_signals.py"
    module.write_text(
        f"import sys\nsys.path.insert(0, {str(UNIT_TESTS)!r})\n"
        "from test_signal_failures import signals\nSIGNALS = signals('apply')\n"
    )
    return module


def archive(root: Path) -> Path:
    path = root / "events.jsonl"
    lines = [
        json.dumps(
            {
                "event_id": f"e{n}",
                "user_id": "u1",
                "item_id": f"i{n}",
                "action": "click",
                "surface": "home",
                "ts": NOW + n,
                "attrs": {"dwell_ms": dwell},
            }
        )
        for n, dwell in enumerate([100, 99_999, 200])
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def settings(root: Path) -> Settings:
    overrides = {"signals": str(faulty_module(root)), "store": {"path": str(root / "store")}}
    return Settings.load(environ={}, overrides=overrides)


def dead_letters(path: Path) -> list[tuple[str, str]]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [(record["reason"], json.loads(record["raw"])["event_id"]) for record in records]


@pytest.mark.parametrize("workers", [1, 2])
def test_backfill_dead_letters_the_event_a_signal_fails_on(tmp_path: Path, workers: int) -> None:
    job = BackfillJob(str(archive(tmp_path)), settings(tmp_path), until_ms=NOW + 10,
                      workers=workers, dead_letter=tmp_path / "dead.jsonl")  # fmt: skip
    summary = backfill(job)
    assert summary.events == 3
    assert [bad.reason for bad in summary.report.rejected] == ["signal_failed"]
    assert dead_letters(tmp_path / "dead.jsonl") == [("signal_failed", "e1")]
    # At the event's own place in the archive (the review found the backfill's feeding
    # order there), whatever the shards.
    (record,) = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert (record["partition"], record["offset"]) == ("archive:events.jsonl", 2)


def test_the_training_set_dead_letters_it_and_reads_the_rest(tmp_path: Path) -> None:
    labels = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"user_id": ["u1"], "ts": [NOW + 10]}), labels)
    out = tmp_path / "features.parquet"
    job = TrainingJob(labels, str(archive(tmp_path)), settings(tmp_path), out,
                      dead_letter=tmp_path / "dead.jsonl")  # fmt: skip
    summary = training_set(job)
    assert summary.signal_failed == 1
    assert dead_letters(tmp_path / "dead.jsonl") == [("signal_failed", "e1")]
    row = pq.read_table(out).to_pylist()[0]
    assert json.loads(row["dwell"]) == 300  # the events it did not fail on


def test_a_context_the_api_refuses_at_a_label_time_is_null_not_the_end_of_the_job(
    tmp_path: Path,
) -> None:
    """Found by the offline differential fuzz: with --context until=T, a LastSeen that had an
    event after T (and before the label) is refused by the API at the label's time (a newer
    event hides the latest one before T); the training set ended with that error and wrote
    nothing. The value is null (as the API served none), counted in the summary."""
    module = tmp_path / "seen.py"
    module.write_text(
        "from usersignals import LastSeen, Signal\n"
        "SIGNALS = [Signal(name='last_seen', version=1, aggregate=LastSeen(by='action'),"
        " retention='14d')]\n"
    )
    events = tmp_path / "events.jsonl"
    base = {"user_id": "u1", "item_id": "i1", "action": "click", "surface": "home"}
    events.write_text(
        "".join(
            json.dumps({**base, "event_id": f"e{n}", "ts": NOW + n * 3_600_000}) + "\n"
            for n in range(2)
        )
    )
    labels = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"user_id": ["u1", "u1"], "ts": [NOW + 10, NOW + 3_600_000]}), labels)
    overrides = {"signals": str(module), "store": {"path": str(tmp_path / "store")}}
    job = TrainingJob(labels, str(events), Settings.load(environ={}, overrides=overrides),
                      tmp_path / "f.parquet", contexts=(f"until={NOW + 1_800_000}",))  # fmt: skip
    summary = training_set(job)
    assert summary.refused == 1
    rows = pq.read_table(tmp_path / "f.parquet").to_pylist()
    assert json.loads(rows[0]["last_seen"]) == {"click": NOW}  # the first label: answered
    assert rows[1]["last_seen"] in (None, "null")


def test_the_training_set_judges_repeats_in_archive_order_across_files(tmp_path: Path) -> None:
    """Found by the offline differential fuzz: without Kafka coordinates, a multi-file
    archive's files were merged by event time as if they were partitions, so a copy of e1
    in b.jsonl landed beside its original and was dropped as a repeat, where backfill and
    replay (archive order: files by name, then row) met it days later, beyond the dedupe
    horizon, and counted it. The training set now reads the archive's order too."""
    module = tmp_path / "counts.py"
    module.write_text(
        "from usersignals import Count, Signal\n"
        "SIGNALS = [Signal(name='counts', version=1, aggregate=Count(by='action'),"
        " retention='28d')]\n"
    )
    archive = tmp_path / "archive"
    archive.mkdir()
    base = {"user_id": "u1", "item_id": "i1", "surface": "home"}
    first = json.dumps({**base, "event_id": "e1", "action": "save", "ts": NOW})
    later = json.dumps({**base, "event_id": "e2", "action": "click", "ts": NOW + 3 * 86_400_000})
    (archive / "a.jsonl").write_text(first + "\n" + later + "\n")
    (archive / "b.jsonl").write_text(first + "\n")
    labels = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"user_id": ["u1"], "ts": [NOW + 3 * 86_400_000]}), labels)
    overrides = {"signals": str(module), "store": {"path": str(tmp_path / "store")}}
    settings = Settings.load(environ={}, overrides=overrides)
    out = tmp_path / "f.parquet"
    training_set(TrainingJob(labels, str(archive), settings, out))
    assert json.loads(pq.read_table(out).to_pylist()[0]["counts"])["total"] == 3
    backfill(BackfillJob(str(archive), settings, until_ms=NOW + 4 * 86_400_000))
    from usersignals.app import open_store_reader

    reader = open_store_reader(settings)
    try:
        answer = reader.read("u1", ["counts"], ReadContext(as_of_ms=NOW + 3 * 86_400_000))
    finally:
        reader.store.close()
    assert answer.signals["counts"].value["total"] == 3


@pytest.mark.parametrize("stream_met_u1", [True, False])
def test_an_only_backfill_leaves_a_user_the_stream_has_not_met_to_the_stream(
    tmp_path: Path, stream_met_u1: bool
) -> None:
    """Found by the offline differential fuzz: the stream applied offset 0 (u1) with
    `counts`; an export up to offset 1 (u2, not yet met by the stream) was backfilled
    --only saves, which wrote u2's record with progress at offset 1; the stream, resuming at
    offset 1 with counts and saves, then skipped u2's event for every signal, and u2's counts
    stayed 0. An --only backfill into a store the stream writes now leaves a user without a
    record to the stream (it meets their events anyway): every signal gets them once."""
    from usersignals import Count, Engine, MicroBatch, Position, Signal, SignalRegistry
    from usersignals.state.rocks import RocksStore

    counts = "Signal(name='counts', version=1, aggregate=Count(by='action'), retention='28d')"
    saves = ("Signal(name='saves', version=1, where=action.eq('save'), "
             "aggregate=Count(by='surface'), retention='28d')")  # fmt: skip
    module = tmp_path / "both.py"
    module.write_text(
        f"from usersignals import Count, Signal, action\nSIGNALS = [{counts}, {saves}]\n"
    )
    base = {"item_id": "i1", "surface": "home", "action": "save"}
    first = {**base, "event_id": "e1", "user_id": "u1", "ts": NOW}
    second = {**base, "event_id": "e2", "user_id": "u2", "ts": NOW + 1}
    export = tmp_path / "export.jsonl"
    export.write_text("".join(
        json.dumps({"topic": "eng", "partition": 0, "offset": n, "value": value}) + "\n"
        for n, value in enumerate([first, second])
    ))  # fmt: skip
    store_path = tmp_path / "store"
    store = RocksStore(store_path)
    old = SignalRegistry([Signal(name="counts", version=1, aggregate=Count(by="action"),
                                 retention="28d")])  # fmt: skip
    from usersignals import Event

    if stream_met_u1:
        Engine(old, store).process(MicroBatch([Event(**first)], [Position("eng/0", 0)]))
    store.close()
    if not stream_met_u1:
        # The second fuzz run's variant: the processor has run (offset 0 was a bad line it
        # dead-lettered), so the store holds no user yet, only the processor's record.
        from usersignals.app import build_processor

        old_module = tmp_path / "counts_only.py"
        old_module.write_text(f"from usersignals import Count, Signal\nSIGNALS = [{counts}]\n")
        overrides = {"signals": str(old_module), "store": {"path": str(store_path)}}
        build_processor(Settings.load(environ={}, overrides=overrides)).close()
    settings = Settings.load(
        environ={}, overrides={"signals": str(module), "store": {"path": str(store_path)}}
    )
    backfill(BackfillJob(str(export), settings, only=("saves",)))
    store = RocksStore(store_path)
    try:
        engine = Engine(SignalRegistry.from_module(str(module)), store)
        engine.process(MicroBatch([Event(**second)], [Position("eng/0", 1)]))  # the stream
        reader = SignalReader(SignalRegistry.from_module(str(module)), store)
        context = ReadContext(now_ms=NOW + 10)
        for user in ("u1", "u2") if stream_met_u1 else ("u2",):
            answer = reader.read(user, None, context).signals
            assert answer["counts"].value["total"] == 1, user
            assert answer["saves"].value["total"] == 1, user
    finally:
        store.close()


def test_leaving_new_users_to_the_stream_keeps_the_time_boundary_for_rows() -> None:
    """Found by the review: for a user without a record, an event without coordinates in a
    block that also has Kafka positions was taken past --until (the new branch matched it
    and skipped the boundary check)."""
    from usersignals import Event, Position
    from usersignals.offline.backfill import Taker
    from usersignals.offline.boundary import Boundary
    from usersignals.offline.memory import MemoryStore
    from usersignals.state.codec import UserRecord, encode_record
    from usersignals.state.keys import user_key

    store = MemoryStore()
    store.write({user_key("u1"): encode_record(UserRecord({"eng/0": 3}, {}))})
    base = {"user_id": "u2", "item_id": "i1", "action": "save", "surface": "home"}
    kafka = Event(**base, event_id="k", ts=NOW)
    late = Event(**base, event_id="late", ts=NOW + 10_000)
    taker = Taker(Boundary(until_ms=NOW + 100), store, leaves_new_users=True)
    taker.take([kafka, late], [Position("eng/0", 5), Position("archive:x.parquet", 2)])
    assert [event.event_id for event in taker.events] == []
    assert taker.summary.after_boundary == 1
    assert taker.summary.left_to_stream == 1


def test_a_user_cut_across_shards_has_its_failing_event_dead_lettered_once(
    tmp_path: Path,
) -> None:
    """Found by the review: a training-set user cut across two shards had its events applied
    in both, and both dead-lettered the event the aggregation failed on."""
    labels = tmp_path / "labels.parquet"
    times = [NOW + 3 + n for n in range(6)]
    pq.write_table(pa.table({"user_id": ["u1"] * 6, "ts": times}), labels)
    job = TrainingJob(labels, str(archive(tmp_path)), settings(tmp_path), tmp_path / "f.parquet",
                      workers=2, dead_letter=tmp_path / "dead.jsonl")  # fmt: skip
    summary = training_set(job)
    assert summary.signal_failed == 1
    assert dead_letters(tmp_path / "dead.jsonl") == [("signal_failed", "e1")]


def test_a_user_cut_across_shards_has_every_failing_event_dead_lettered(
    tmp_path: Path,
) -> None:
    """Found in a signal author's trial: with two workers a cut user's failing events that
    only the other shard's labels reach (events after the owner's last label) were dropped:
    5 failures counted and dead-lettered of the 25 one worker counts. Here the owner's
    piece (the first 7 of 10 labels, all before e1) fails on nothing, the other's on e1."""
    labels = tmp_path / "labels.parquet"
    times = [NOW] * 8 + [NOW + 5] * 2
    pq.write_table(pa.table({"user_id": ["u1"] * 10, "ts": times}), labels)
    counted = {}
    for workers in (1, 2):
        dead = tmp_path / f"dead-{workers}.jsonl"
        job = TrainingJob(labels, str(archive(tmp_path)), settings(tmp_path),
                          tmp_path / f"f-{workers}.parquet", workers=workers,
                          dead_letter=dead)  # fmt: skip
        summary = training_set(job)
        counted[workers] = (summary.signal_failed, dead_letters(dead) if dead.exists() else [])
    assert counted[2] == counted[1] == (1, [("signal_failed", "e1")])


@pytest.mark.parametrize("workers", [1, 2])
def test_a_user_defined_read_that_fails_stops_the_training_set_naming_it(
    tmp_path: Path, workers: int
) -> None:
    """Found by the signal-author trial: a user-defined read that raised ended the
    training set with the read's traceback (from a worker process, with two). It cannot leave
    the value out, as the API does (signal_failed): it stops, naming signal, user and time."""
    module = tmp_path / "failing_read.py"
    module.write_text(
        f"import sys\nsys.path.insert(0, {str(UNIT_TESTS)!r})\n"
        "from test_signal_failures import FailingDwell, FailingRead, signals\n"
        "from usersignals import Signal\n"
        "FailingRead.answer = 'raise'\n"
        "SIGNALS = [signals('none')[0], Signal(name='dwell', version=1,"
        " aggregate=FailingDwell('none'))]\n"
    )
    labels = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"user_id": ["u1"], "ts": [NOW + 10]}), labels)
    overrides = {"signals": str(module), "store": {"path": str(tmp_path / "store")}}
    job = TrainingJob(
        labels, str(archive(tmp_path)), Settings.load(environ={}, overrides=overrides),
        out=tmp_path / "features.parquet", workers=workers,
    )  # fmt: skip
    with pytest.raises(SignalReadError) as caught:
        training_set(job)
    assert (caught.value.signal, caught.value.user_id, caught.value.as_of_ms) == (
        "dwell@1",
        "u1",
        NOW + 10,
    )
    assert "ZeroDivisionError: division by zero" in str(caught.value)
