"""The Spark runners in local mode: the same states and the same training file as locally.

One SparkSession for the module (a JVM start costs seconds); few, small cases.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from offline_helpers import (
    History,
    new_store,
    random_history,
    redelivered,
    settings_for,
    user_states,
    write_jsonl_archive,
    write_parquet_archive,
)
from test_offline_training import CONTEXTS, write_labels

from usersignals.offline import BackfillJob, BackfillSummary, backfill
from usersignals.offline.training import TrainingJob, training_inputs, training_set
from usersignals.state.rocks import RocksStore
from usersignals.state.versions import read_backfill_offsets

JAVA_17 = Path("/usr/lib/jvm/java-17-openjdk-amd64")
pyspark = pytest.importorskip("pyspark")
BAD = [b"not json", b'{"event_id": "x"}']
DRIVER_RESULTS = "1m"


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    if "JAVA_HOME" not in os.environ and JAVA_17.exists():
        os.environ["JAVA_HOME"] = str(JAVA_17)
    from usersignals.offline.spark import spark_session

    # A small cap on what tasks may send to the driver: a job that brings the features back
    # to the driver (rather than writing them from the executors) fails on it.
    session = spark_session(
        "local[2]", partitions=3, conf={"spark.driver.maxResultSize": DRIVER_RESULTS}
    )
    yield session
    session.stop()


@pytest.fixture(scope="module")
def history() -> History:
    return random_history(31, events=1_200, users=30)


def stored(path: Path) -> tuple[dict[bytes, bytes], dict[str, int]]:
    store = RocksStore(path)
    try:
        return user_states(store), read_backfill_offsets(store)
    finally:
        store.close()


def backfilled_both(
    spark: object,
    tmp_path: Path,
    history: History,
    archive: Path | str,
    workers: int,
    until_ms: int | None = None,
    dead_letters: bool = False,
) -> list[tuple[Path, BackfillSummary]]:
    """The same backfill of ``archive`` by the local runner and on Spark, each into a new
    store of ``history``'s items (``tmp_path/local``, ``tmp_path/spark``; dead letters to
    ``tmp_path/RUNNER-dead.jsonl`` when asked): each store and summary."""
    from usersignals.offline.spark import backfill_spark

    done = []
    for runner in ("local", "spark"):
        path = tmp_path / runner
        new_store(path, history).close()
        dead = tmp_path / f"{runner}-dead.jsonl" if dead_letters else None
        job = BackfillJob(str(archive), settings_for(path), until_ms=until_ms, workers=workers,
                          dead_letter=dead)  # fmt: skip
        local = runner == "local"
        done.append(
            (path, backfill(job) if local else backfill_spark(spark, job, tmp_path / "states"))
        )
    return done


def test_spark_backfill_equals_local(tmp_path: Path, history: History, spark: object) -> None:

    archive = write_parquet_archive(tmp_path / "archive", history, BAD, period="%Y-%m")
    until = sorted(event.ts for event in history.events)[900]
    results = [
        (stored(path), summary.events, summary.bad, summary.after_boundary)
        for path, summary in backfilled_both(
            spark, tmp_path, history, archive, workers=3, until_ms=until, dead_letters=True
        )
    ]
    assert results[0] == results[1]
    (states, offsets), events, bad, after = results[1]
    assert 0 < len(states) <= len({e.user_id for e in history.events})
    assert bad == len(BAD)
    assert events > 0
    assert after > 0
    assert events + after == len(history.events)
    assert sorted(offsets) == ["engagements/0", "engagements/1", "engagements/2"]
    assert (tmp_path / "local-dead.jsonl").read_bytes() == (
        tmp_path / "spark-dead.jsonl"
    ).read_bytes()


def test_spark_counts_the_repeats_it_drops_as_the_local_runner_does(
    tmp_path: Path, history: History, spark: object
) -> None:
    """The summary's repeated event ids (which the command prints, as `replay` does): the
    Spark runner's partitions dropped them but did not say how many."""

    retried = redelivered(history, 40, later=5)
    archive = write_parquet_archive(tmp_path / "archive", retried, period="%Y-%m")
    repeats = [
        summary.report.repeats
        for _, summary in backfilled_both(spark, tmp_path, retried, archive, workers=3)
    ]
    assert repeats[0] == repeats[1] > 0


def test_spark_training_set_is_the_local_file_byte_for_byte(
    tmp_path: Path, history: History, spark: object
) -> None:
    from usersignals.offline.spark import training_set_spark

    new_store(tmp_path / "store", history).close()
    archive = write_jsonl_archive(tmp_path / "archive", history, files=2)
    write_labels(tmp_path / "labels.parquet", history, 50, seed=5)
    # An `until` before many users' later events: values the API refuses at their label's
    # time too, null in the file, and counted (the command warns of them).
    until = sorted(event.ts for event in history.events)[len(history.events) * 3 // 10]
    outputs, refused = [], []
    for runner in ("local", "spark"):
        out = tmp_path / f"{runner}.parquet"
        job = TrainingJob(
            tmp_path / "labels.parquet", str(archive), settings_for(tmp_path / "store"), out,
            contexts=(*CONTEXTS, f"until={until}"), workers=2,
        )  # fmt: skip
        if runner == "local":
            summary = training_set(job)
        else:
            summary = training_set_spark(spark, training_inputs(job))
        outputs.append(out.read_bytes())
        refused.append(summary.refused)
    assert outputs[0] == outputs[1]
    assert refused[0] == refused[1] > 0


def test_spark_training_set_values_never_pass_through_the_driver(
    tmp_path: Path, history: History, spark: object
) -> None:
    """The features (here about 2 MB of JSON) are written by the executors: the job stays
    within the session's 1 MB cap on task results sent to the driver."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from usersignals.offline.spark import training_set_spark

    new_store(tmp_path / "store", history).close()
    archive = write_jsonl_archive(tmp_path / "archive", history, files=2)
    labels = write_labels(tmp_path / "labels.parquet", history, 400, seed=8)
    out = tmp_path / "features.parquet"
    job = TrainingJob(
        tmp_path / "labels.parquet", str(archive), settings_for(tmp_path / "store"), out,
        contexts=CONTEXTS, workers=2,
    )  # fmt: skip
    summary = training_set_spark(spark, training_inputs(job))
    table = pq.read_table(out)
    features = table.column_names[3:]
    size = sum(len(value or "") for name in features for value in table.column(name).to_pylist())
    assert size > 1_500_000  # well over the cap: the check means something
    assert summary.rows == table.num_rows == len(labels)
    times = table.column("ts").cast(pa.int64()).to_pylist()
    assert list(zip(table.column("user_id").to_pylist(), times, strict=True)) == labels
    assert all(table.column(name).null_count == 0 for name in features)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_spark_takes_an_event_whose_attribute_is_beyond_64_bits(
    tmp_path: Path, history: History, spark: object
) -> None:
    """Found by the offline differential fuzz: a valid event with attrs {"dwell": 10**20},
    which replay and the local backfill apply, ended --spark backfill and training-set with
    an OverflowError (the events crossed the shuffle as msgpack, which stops at 64 bits)."""
    import json

    base = {"user_id": "u1", "item_id": "i1", "surface": "home", "ts": history.spec.start_ms}
    lines = [
        {**base, "event_id": "big", "action": "click", "attrs": {"dwell": 10**20}},
        {**base, "event_id": "small", "action": "save", "ts": base["ts"] + 1},
    ]
    archive = tmp_path / "events.jsonl"
    archive.write_text("".join(json.dumps(line) + "\n" for line in lines))
    results = [
        (stored(path)[0], summary.events)
        for path, summary in backfilled_both(spark, tmp_path, history, archive, workers=1)
    ]
    assert results[0] == results[1]
    assert results[1][1] == 2


@pytest.mark.parametrize("envelope", [False, True], ids=["rows", "kafka-export"])
def test_spark_forgets_a_deleted_users_events_as_the_local_runner_does(
    tmp_path: Path, spark: object, envelope: bool
) -> None:
    """An archive's deletion record (tests/integration/test_offline_deletions.py): the
    same states and the same training file as locally, and no dead letter for it."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from test_offline_deletions import HISTORY, HOUR, NOW, served, settings, write_archive

    from usersignals.offline.spark import backfill_spark, training_set_spark

    archive = str(write_archive(tmp_path / "history.jsonl", HISTORY, envelope))
    labels = tmp_path / "labels.parquet"
    times = [NOW + hours * HOUR for hours in (1, 3, 4, 6, 9)]
    pq.write_table(pa.table({"user_id": ["u1"] * 5 + ["u2"], "ts": [*times, times[-1]]}), labels)
    answers, files, counts = [], [], []
    for runner in ("local", "spark"):
        config, dead = settings(tmp_path, runner), tmp_path / f"{runner}-dead.jsonl"
        job = BackfillJob(archive, config, workers=2, dead_letter=dead)
        out = tmp_path / f"{runner}.parquet"
        training = TrainingJob(labels, archive, config, out, workers=2, dead_letter=dead)
        if runner == "local":
            summaries = backfill(job), training_set(training)
        else:
            summaries = (
                backfill_spark(spark, job, tmp_path / "states"),
                training_set_spark(spark, training_inputs(training)),
            )
        answers.append(served(config))
        files.append(out.read_bytes())
        counts.append([(s.bad, s.deletions) for s in summaries])
        assert not dead.exists()
    assert answers[0] == answers[1]
    assert answers[1]["u1"]["counts"]["total"] == 3
    assert files[0] == files[1]
    assert counts == [[(0, 1), (0, 1)]] * 2


def test_spark_dead_letters_the_event_a_signal_fails_on_as_the_local_runner_does(
    tmp_path: Path, spark: object
) -> None:
    """A user-defined aggregation that fails on an event: Spark left the event out of that
    signal without a dead letter or a count (documented as a gap), where the local runners
    dead-letter it with reason ``signal_failed``: bad input lost without a trace."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq
    from test_offline_signal_failures import NOW, archive, dead_letters, settings

    from usersignals.offline.common import shard_of
    from usersignals.offline.spark import backfill_spark, training_set_spark

    # The failing events of two users, one in each shard: each partition's file is merged.
    path = archive(tmp_path)
    lines = path.read_text().splitlines()
    other = [
        line.replace('"u1"', '"u3"').replace('"event_id": "e', '"event_id": "f') for line in lines
    ]
    path.write_text("\n".join(lines + other) + "\n")
    assert {shard_of("u1", 2), shard_of("u3", 2)} == {0, 1}
    events = str(path)
    job = BackfillJob(events, settings(tmp_path), until_ms=NOW + 10, workers=2,
                      dead_letter=tmp_path / "dead.jsonl")  # fmt: skip
    summary = backfill_spark(spark, job, tmp_path / "states")
    assert summary.events == 6
    assert [bad.reason for bad in summary.report.rejected] == ["signal_failed"] * 2
    assert dead_letters(tmp_path / "dead.jsonl") == [
        ("signal_failed", "e1"),
        ("signal_failed", "f1"),
    ]
    records = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [(r["partition"], r["offset"]) for r in records] == [
        ("archive:events.jsonl", 2),
        ("archive:events.jsonl", 5),
    ]

    labels = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"user_id": ["u1", "u3"], "ts": [NOW + 10] * 2}), labels)
    out = tmp_path / "features.parquet"
    training = TrainingJob(labels, events, settings(tmp_path), out, workers=2,
                           dead_letter=tmp_path / "training-dead.jsonl")  # fmt: skip
    done = training_set_spark(spark, training_inputs(training))
    assert done.signal_failed == 2
    assert dead_letters(tmp_path / "training-dead.jsonl") == [
        ("signal_failed", "e1"),
        ("signal_failed", "f1"),
    ]
    assert [json.loads(row["dwell"]) for row in pq.read_table(out).to_pylist()] == [300, 300]


def test_a_task_that_fails_on_a_bad_archive_file_says_so_in_one_line(
    tmp_path: Path, history: History, spark: object
) -> None:
    """From the trial: a Spark job that met a file it cannot read exited after about 240
    lines of JVM log and traceback, the one line that says which file among them. Now the
    driver raises the executor's own error (the command prints it as the local runner's),
    and in local mode the JVM's three echoes of the failed task are off."""
    from usersignals.errors import SparkTaskError
    from usersignals.offline.spark import backfill_spark

    path = write_jsonl_archive(tmp_path / "archive", history, files=2)
    (path / "b.parquet").write_bytes(b"PAR1 not a Parquet file")
    job = BackfillJob(str(path), settings_for(tmp_path / "store"), workers=2)
    new_store(tmp_path / "store", history).close()
    with pytest.raises(SparkTaskError) as caught:
        backfill_spark(spark, job, tmp_path / "states")
    assert caught.value.kind == "ConfigurationError"
    assert str(caught.value).startswith("cannot read the event archive's Parquet file b.parquet")
    assert "\n" not in str(caught.value)
    jvm = spark._jvm  # type: ignore[attr-defined]
    executor = jvm.org.apache.logging.log4j.LogManager.getLogger(
        "org.apache.spark.executor.Executor"
    )
    assert executor.getLevel().toString() == "OFF"


def test_spark_backfill_refuses_a_definition_changed_under_its_version(
    tmp_path: Path, spark: object
) -> None:
    """The local ``backfill()`` refuses a version defined otherwise than when the store's
    states of it were computed; ``backfill_spark`` as a library function did not (only the
    command checked, before calling it), and merged the two meanings into one state."""
    import json

    from usersignals.config import Settings
    from usersignals.errors import ConfigurationError
    from usersignals.offline.plan import apply_plan
    from usersignals.offline.spark import backfill_spark
    from usersignals.signals.registry import SignalRegistry

    event = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "action": "click",
             "surface": "home", "ts": 1_767_225_600_000}  # fmt: skip
    (tmp_path / "events.jsonl").write_text(json.dumps(event) + "\n")
    modules = {}
    for name, half_life in (("a.py", "3d"), ("b.py", "2d")):
        modules[name] = tmp_path / name
        modules[name].write_text(
            "from usersignals import DecayedScores, Signal\n"
            'SIGNALS = [Signal(name="interest", version=1, retention="7d", aggregate='
            f'DecayedScores(key="surface", half_life="{half_life}"))]\n'
        )

    def settings(module: Path) -> Settings:
        overrides = {"signals": str(module), "store": {"path": str(tmp_path / "s")}}
        return Settings.load(environ={}, overrides=overrides)

    applied = RocksStore(tmp_path / "s")
    try:
        apply_plan(applied, SignalRegistry.from_module(str(modules["a.py"])))
    finally:
        applied.close()
    job = BackfillJob(str(tmp_path / "events.jsonl"), settings(modules["b.py"]), workers=1)
    with pytest.raises(ConfigurationError, match="interest@1 defined otherwise"):
        backfill_spark(spark, job, tmp_path / "states")


def test_spark_says_an_archive_without_coordinates_ends_before_the_stream(
    tmp_path: Path, history: History, spark: object
) -> None:
    """As the local runner does (test_offline_backfill's test of it): the users whose stored
    fingerprints are newer than the archive's events for them are counted."""
    from offline_helpers import stream

    from usersignals.offline.spark import backfill_spark

    cut = sorted(event.ts for event in history.events)[len(history.events) // 2]
    short = History(
        history.spec,
        [event for event in history.events if event.ts <= cut],
        [p for e, p in zip(history.events, history.positions, strict=True) if e.ts <= cut],
        history.items,
    )
    archive = write_jsonl_archive(tmp_path / "archive", short)
    counted = []
    for runner in ("local", "spark"):
        store = new_store(tmp_path / runner, history)
        try:
            stream(store, history, 89)
        finally:
            store.close()
        job = BackfillJob(str(archive), settings_for(tmp_path / runner), workers=2)
        summary = backfill(job) if runner == "local" else backfill_spark(spark, job, tmp_path / "s")
        counted.append(summary.stream_ahead)
    assert counted[0] == counted[1] > 0
