"""Point-in-time training data: each label row's value is what streaming up to its time serves,
and what the HTTP API answers with ``as_of`` after a full replay."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from offline_helpers import (
    BAD,
    DAY_MS,
    REFERENCE,
    History,
    applied_by_the_stream,
    load_items,
    new_store,
    random_history,
    redelivered,
    retried_elsewhere,
    settings_for,
    stream,
    write_jsonl_archive,
    write_parquet_archive,
)
from service_helpers import BIN, _stop, free_port, wait_ready

from usersignals import Engine, MicroBatch, Position, ReadContext, SignalRegistry
from usersignals.enrich import Materializer, TableSource
from usersignals.errors import ConfigurationError, ContextError, SignalNotFoundError
from usersignals.offline.label_shards import plan_label_shards
from usersignals.offline.memory import MemoryStore
from usersignals.offline.training import (
    TrainingJob,
    feature_columns,
    parse_context_option,
    read_labels,
    training_set,
)
from usersignals.serving import SignalReader
from usersignals.serving.feature_log import read_feature_log

HOUR_MS = 3_600_000

CONTEXTS = (
    "",
    "window=7d,actions=save,click,closeup",
    "window=1h",
    "limit=5,dedupe=true,surfaces=home",
)


@pytest.fixture(scope="module")
def history() -> History:
    return random_history(21)


def write_labels(
    path: Path, history: History, count: int, seed: int, busy: str | None = None
) -> list[tuple[str, int]]:
    """Labels at random times, some at a time shared by many users, a few at exact event times
    (with ``busy``, four in five of them that user's)."""
    rng = random.Random(seed)
    users = sorted({event.user_id for event in history.events})
    times = [event.ts for event in history.events]
    shared = [rng.randint(min(times), max(times)) for _ in range(3)]
    rows = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.5:
            ts = rng.choice(shared)
        elif kind < 0.7:
            ts = rng.choice(times)  # a label exactly at an event's time includes that event
        else:
            ts = rng.randint(min(times), max(times) + 86_400_000)
        user = busy if busy is not None and rng.random() < 0.8 else rng.choice([*users, "nobody"])
        rows.append((user, ts))
    table = pa.table(
        {
            "user_id": [user for user, _ in rows],
            "ts": pa.array([ts for _, ts in rows], pa.timestamp("ms", tz="UTC")),
            "label": [i % 2 for i in range(count)],
        }
    )
    pq.write_table(table, path)
    return rows


def streamed_until(history: History, ts: int) -> tuple[SignalRegistry, MemoryStore]:
    """The live path up to ``ts``: every event at or before it, in stream order."""
    registry = SignalRegistry.from_module(REFERENCE)
    store = MemoryStore()
    load_items(store, history.items)
    engine = Engine(
        registry, store, Materializer({"items": TableSource("items", store.table("items"))})
    )
    pairs = [(e, p) for e, p in zip(history.events, history.positions, strict=True) if e.ts <= ts]
    for start in range(0, len(pairs), 113):
        chunk = pairs[start : start + 113]
        engine.process(MicroBatch([e for e, _ in chunk], [p for _, p in chunk]))
    return registry, store


def run_training(
    tmp_path: Path, history: History, labels: Path, out: Path, workers: int = 1
) -> None:
    store = tmp_path / "store"
    if not store.exists():
        new_store(store, history).close()
    archive = tmp_path / "archive"
    if not archive.exists():
        write_parquet_archive(archive, history)
    training_set(
        TrainingJob(
            labels, str(archive), settings_for(store), out, contexts=CONTEXTS, workers=workers
        )
    )


def features_of(
    tmp_path: Path,
    history: History,
    rows: list[tuple[str, int]],
    contexts: tuple[str, ...],
    **processing: object,
) -> list[dict[str, Any]]:
    """The training set's rows for labels ``rows`` (user, time) over ``history``, from a
    Hive day archive with Kafka coordinates, with these ``processing`` settings."""
    pq.write_table(
        pa.table({"user_id": [u for u, _ in rows], "ts": [t for _, t in rows]}),
        tmp_path / "labels.parquet",
    )
    new_store(tmp_path / "store", history).close()
    training_set(
        TrainingJob(
            tmp_path / "labels.parquet",
            str(write_parquet_archive(tmp_path / "archive", history)),
            settings_for(tmp_path / "store", **processing),
            tmp_path / "features.parquet",
            contexts=contexts,
        )
    )
    return pq.read_table(tmp_path / "features.parquet").to_pylist()


def test_training_values_are_what_streaming_up_to_the_label_time_serves(
    tmp_path: Path, history: History
) -> None:
    rows = write_labels(tmp_path / "labels.parquet", history, 60, seed=1)
    run_training(tmp_path, history, tmp_path / "labels.parquet", tmp_path / "features.parquet")
    features = pq.read_table(tmp_path / "features.parquet").to_pylist()
    assert [(r["user_id"], int(r["ts"].timestamp() * 1000)) for r in features] == rows
    assert [r["label"] for r in features] == [i % 2 for i in range(60)]
    registry = SignalRegistry.from_module(REFERENCE)
    contexts = [ReadContext.parse(parse_context_option(text), now_ms=0) for text in CONTEXTS]
    checked = 0
    for ts in sorted({ts for _, ts in rows}):
        _, store = streamed_until(history, ts)
        reader = SignalReader(registry, store)
        for row, (user, label_ts) in zip(features, rows, strict=True):
            if label_ts != ts:
                continue
            for text, context in zip(CONTEXTS, contexts, strict=True):
                at = dataclasses.replace(context, as_of_ms=ts, now_ms=ts)
                answer = reader.read(user, None, at)
                for signal in registry:
                    column = f"{signal.name}[{text}]"
                    assert json.loads(row[column]) == answer.signals[signal.name].value, column
                    checked += 1
    assert checked == 60 * len(CONTEXTS) * len(registry)


@pytest.mark.parametrize("workers", [1, 2])
def test_rows_without_a_user_or_a_time_are_written_null_and_counted(
    tmp_path: Path, history: History, workers: int
) -> None:
    user, ts = history.events[0].user_id, history.events[-1].ts
    labels = pa.table(
        {
            "user_id": [user, None, user, user],
            "ts": pa.array([ts, ts, None, ts], pa.int64()),
        }
    )
    pq.write_table(labels, tmp_path / "labels.parquet")
    archive = write_jsonl_archive(tmp_path / "archive", history)
    new_store(tmp_path / "store", history).close()
    out = tmp_path / "features.parquet"
    summary = training_set(
        TrainingJob(
            tmp_path / "labels.parquet", str(archive), settings_for(tmp_path / "store"), out,
            workers=workers,
        )
    )  # fmt: skip
    assert (summary.rows, summary.rows_without_values) == (4, 2)
    values = pq.read_table(out).column("action_counts").to_pylist()
    assert values[1] is None
    assert values[2] is None
    assert values[0] is not None
    assert values[0] == values[3]


@pytest.mark.parametrize("busy", [False, True])
def test_training_set_in_two_processes_is_the_same_file(
    tmp_path: Path, history: History, busy: bool
) -> None:
    """Two shards, each decoding only its share of the archive: the same file, counts and dead
    letters (in archive order; bad records fall to different shards) as one process. With
    one user's labels outweighing the rest, that user is cut between the two shards."""
    busiest = Counter(event.user_id for event in history.events).most_common(1)[0][0]
    write_labels(tmp_path / "labels.parquet", history, 40, seed=2, busy=busiest if busy else None)
    _, labels = read_labels(tmp_path / "labels.parquet", "user_id", "ts")
    cut = plan_label_shards(labels, 2).borrowed != [frozenset(), frozenset()]
    assert cut == busy
    archive = write_parquet_archive(tmp_path / "archive", history, BAD)
    new_store(tmp_path / "store", history).close()
    results = []
    for workers in (1, 2):
        out, dead = tmp_path / f"out-{workers}.parquet", tmp_path / f"dead-{workers}.jsonl"
        summary = training_set(
            TrainingJob(
                tmp_path / "labels.parquet", str(archive), settings_for(tmp_path / "store"), out,
                contexts=CONTEXTS, workers=workers, dead_letter=dead,
            )
        )  # fmt: skip
        results.append((out.read_bytes(), summary.events, summary.bad, dead.read_bytes()))
    assert results[0] == results[1]
    assert results[0][1:3] == (len(history.events), len(BAD))


CHILD_SHARD = """
import pickle, sys
from usersignals.offline.training import _training_shard

result = _training_shard(pickle.loads(open(sys.argv[1], "rb").read()))
print(result.text_columns_file, "pyarrow" in sys.modules)
"""


def test_a_shard_in_a_process_of_its_own_imports_no_pyarrow(
    tmp_path: Path, history: History
) -> None:
    """A second shard over a JSONL archive: handed its labels by the job, it writes its
    values as the core wrote them, and never imports pyarrow (0.13 s of its start-up, on
    the training set's critical path); the job reads them back into the same file."""
    import pickle

    from usersignals.offline.training import _Shard

    write_labels(tmp_path / "labels.parquet", history, 40, seed=3)
    _, labels = read_labels(tmp_path / "labels.parquet", "user_id", "ts")
    plan = plan_label_shards(labels, 2)
    archive = write_jsonl_archive(tmp_path / "archive", history)
    new_store(tmp_path / "store", history).close()
    job = TrainingJob(
        tmp_path / "labels.parquet", str(archive), settings_for(tmp_path / "store"),
        tmp_path / "out.parquet", contexts=CONTEXTS, workers=2,
    )  # fmt: skip
    values = tmp_path / "values-1"
    shard = _Shard(job, 1, 2, None, values, plan.labels[1], plan.owner, plan.borrowed[1])
    (tmp_path / "shard.pickle").write_bytes(pickle.dumps(shard))
    probe = subprocess.run(
        [sys.executable, "-c", CHILD_SHARD, str(tmp_path / "shard.pickle")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert probe.stdout.split() == ["True", "False"], probe.stderr
    from usersignals.offline.features_file import read_text_columns

    table = read_text_columns(values)
    assert sorted(table.column("row").to_pylist()) == sorted(row for row, _, _ in plan.labels[1])
    assert table.num_columns == 1 + len(CONTEXTS) * len(SignalRegistry.from_module(REFERENCE))


def label_times_across(times: list[int], rng: random.Random) -> list[int]:
    """Label times anywhere in a user's history: before the first event, at events, between
    them, after the newest; on UTC day and tile edges; at the edge of the ``as_of`` look-back."""
    first, newest = times[0], times[-1]
    picks = {first - DAY_MS, first - 1, newest, newest + 1, newest + HOUR_MS, newest + 5 * DAY_MS}
    picks |= {newest - 2 * DAY_MS, newest - 2 * DAY_MS - 1, newest - 1}
    for ts in rng.sample(times, min(3, len(times))):
        picks |= {ts, ts - 1}
    for before, after in rng.sample(list(itertools.pairwise(times)), min(2, len(times) - 1)):
        picks.add((before + after) // 2)
    for ts in (newest, rng.choice(times)):
        for edge in (DAY_MS, 6 * HOUR_MS, HOUR_MS, 5 * 60_000):  # the reference tiles
            start = ts - ts % edge
            picks |= {start, start - 1}
    return sorted(picks)


class LiveAnswers:
    """What the API answered at ``ts`` live: the user's events at or before it, read then."""

    def __init__(self, history: History, dedupe_horizon_ms: int = DAY_MS) -> None:
        self.history = history
        self.registry = SignalRegistry.from_module(REFERENCE)
        self.dedupe_horizon_ms = dedupe_horizon_ms
        self._readers: dict[tuple[str, int], SignalReader] = {}

    def value(self, user: str, ts: int, text: str, name: str) -> Any:
        reader = self._readers.get((user, ts))
        if reader is None:
            reader = self._readers[user, ts] = self._replay(user, ts)
        context = ReadContext.parse(parse_context_option(text), now_ms=0)
        at = dataclasses.replace(context, as_of_ms=ts, now_ms=ts)
        return reader.read(user, None, at).signals[name].value

    def _replay(self, user: str, ts: int) -> SignalReader:
        events = [e for e in self.history.events if e.user_id == user and e.ts <= ts]
        store = MemoryStore()
        load_items(store, self.history.items)
        source = TableSource("items", store.table("items"))
        engine = Engine(
            self.registry,
            store,
            Materializer({"items": source}),
            dedupe_horizon_ms=self.dedupe_horizon_ms,
        )
        if events:
            engine.process(MicroBatch(events, [Position("live", i) for i in range(len(events))]))
        return SignalReader(self.registry, store)


def test_training_value_equals_the_api_answer_as_of_the_label_time(
    tmp_path: Path, history: History
) -> None:
    """After a full replay, the HTTP API with ``as_of=t`` answers what the training set holds
    wherever it answers, for label times anywhere in the users' histories. Where it refuses
    (422 ``as_of_unavailable``: the stored state holds later events it cannot take back), the
    training set holds the value the API served at ``t`` live (docs/deploy.md)."""
    rng = random.Random(3)
    by_user: dict[str, list[int]] = {}
    for event in history.events:
        by_user.setdefault(event.user_id, []).append(event.ts)
    users = rng.sample(sorted(by_user), 5)
    rows = [(u, ts) for u in users for ts in label_times_across(sorted(by_user[u]), rng)]
    pq.write_table(
        pa.table({"user_id": [u for u, _ in rows], "ts": [t for _, t in rows]}),
        tmp_path / "labels.parquet",
    )
    run_training(tmp_path, history, tmp_path / "labels.parquet", tmp_path / "features.parquet")
    features = pq.read_table(tmp_path / "features.parquet").to_pylist()
    store = new_store(tmp_path / "served", history)
    stream(store, history, 200)
    store.close()
    port = free_port()
    env = {
        **os.environ,
        "USERSIGNALS_STORE__PATH": str(tmp_path / "served"),
        "USERSIGNALS_SPOOL__PATH": str(tmp_path / "spool"),
        # Every answer logged to Parquet files: the worker finishes them when it stops.
        "USERSIGNALS_SERVING__FEATURE_LOG_PATH": str(tmp_path / "feature-log"),
        "USERSIGNALS_SERVING__FEATURE_LOG_SINK": "parquet",
        "USERSIGNALS_SERVING__FEATURE_LOG_RATE": "1",
        "USERSIGNALS_SERVING__FEATURE_LOG_BUFFER_ROWS": "100",
        "USERSIGNALS_SERVING__FEATURE_LOG_ROWS_PER_FILE": "250",
    }
    server = subprocess.Popen(
        [str(BIN / "usersignals"), "serve", "--port", str(port)], env=env, cwd=tmp_path
    )
    live = LiveAnswers(history)
    served_ok: list[httpx.Response] = []

    def keep_answers(response: httpx.Response) -> None:
        if response.status_code == 200:
            served_ok.append(response)

    answered: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    try:
        base, _ = wait_ready(port, server)
        hooks = {"response": [keep_answers]}
        with httpx.Client(base_url=base, timeout=10, event_hooks=hooks) as client:
            for row, (user, ts) in zip(features, rows, strict=True):
                for text in CONTEXTS:
                    params = {**parse_context_option(text), "as_of": str(ts)}
                    served = served_per_signal(client, user, params, live.registry)
                    for name, value in served.items():
                        trained = json.loads(row[f"{name}[{text}]"])
                        if value is None:  # refused: the training set holds the live answer
                            assert trained == live.value(user, ts, text, name), (name, text, ts)
                            refused[name] += 1
                        else:
                            assert trained == value[0], (name, text, user, ts)
                            answered[name] += 1
    finally:
        _stop(server)
    # Both cases are reached, for every signal.
    names = {signal.name for signal in live.registry}
    assert set(answered) == set(refused) == names, (answered, refused)
    # The Parquet feature log holds every answer given, in files of at most 250 rows.
    records = read_feature_log(tmp_path / "feature-log")
    assert len(records) == len(served_ok) > 250
    files = list((tmp_path / "feature-log").glob("*.parquet"))
    assert len(files) == -(-len(served_ok) // 250)
    assert not list((tmp_path / "feature-log").glob("*.tmp"))
    # One record per answer: its user, its request's parameters and the values given.
    logged = [(r.user_id, r.params, {k: a.value for k, a in r.signals.items()}) for r in records]
    given = [
        (
            answer.json()["user_id"],
            dict(answer.request.url.params),
            {k: result["value"] for k, result in answer.json()["signals"].items()},
        )
        for answer in served_ok
    ]
    assert logged == given


@pytest.mark.parametrize("horizon_ms", [0, DAY_MS, 3 * DAY_MS])
def test_training_set_judges_repeats_in_the_streams_order(
    tmp_path: Path, history: History, horizon_ms: int
) -> None:
    """Redelivered events, some soon after their originals, some long after: the stream
    drops a redelivery whose original it applied within the horizon before it, and applies
    the others again. The training set holds, at each label time, what the stream's applied
    events up to that time serve, however an archive laid out by event day orders them."""
    repeated = redelivered(redelivered(history, 30, later=5), 45)
    kept = applied_by_the_stream(repeated.events, repeated.positions, repeated.items, horizon_ms)
    applied = History(
        repeated.spec,
        [repeated.events[i] for i in kept],
        [repeated.positions[i] for i in kept],
        repeated.items,
    )
    dropped = len(repeated.events) - len(applied.events)
    twice = len(applied.events) - len(history.events)
    # Both decisions are taken, except with dedupe off (every copy applied).
    assert (dropped > 0 and twice > 0) if horizon_ms else (dropped == 0 and twice > 0)
    rng = random.Random(5)
    copied = sorted(
        {e.user_id for e in repeated.events[len(history.events) :]}
        | {e.user_id for e in history.events[::30]}
    )
    by_user: dict[str, list[int]] = {}
    for event in repeated.events:
        by_user.setdefault(event.user_id, []).append(event.ts)
    rows = [
        (u, ts) for u in rng.sample(copied, 4) for ts in label_times_across(sorted(by_user[u]), rng)
    ]
    features = features_of(tmp_path, repeated, rows, CONTEXTS, dedupe_horizon_ms=horizon_ms)
    live = LiveAnswers(applied, dedupe_horizon_ms=0)  # its events are the applied ones
    for row, (user, ts) in zip(features, rows, strict=True):
        for text in CONTEXTS:
            for name in (signal.name for signal in live.registry):
                trained = json.loads(row[f"{name}[{text}]"])
                assert trained == live.value(user, ts, text, name), (name, text, user, ts)


def test_a_retry_on_another_partition_is_judged_beside_its_original(tmp_path: Path) -> None:
    """The stream drops the retry; the training set too, though the archive puts it after
    every event of the user's own partition (judged there, it was three days behind the
    newest and applied again)."""
    retried = retried_elsewhere(random_history(21).items)
    kept = applied_by_the_stream(retried.events, retried.positions, retried.items, DAY_MS)
    assert kept == [0, 2]
    user, second = retried.events[0].user_id, retried.events[2].ts
    features = features_of(tmp_path, retried, [(user, second - 1), (user, second)], ())
    counts = [json.loads(row["action_counts"]) for row in features]
    assert [count["total"] for count in counts] == [1, 2]


def served_per_signal(
    client: httpx.Client, user: str, params: dict[str, str], registry: SignalRegistry
) -> dict[str, tuple[Any] | None]:
    """Each signal's value (in a 1-tuple) as the API answers ``params``, or None where it
    refuses with 422 ``as_of_unavailable`` (asked one signal at a time after a refusal)."""
    answer = client.get(f"/v1/users/{user}/signals", params=params)
    if answer.status_code == 200:
        return {name: (result["value"],) for name, result in answer.json()["signals"].items()}
    out: dict[str, tuple[Any] | None] = {}
    for signal in registry:
        one = client.get(f"/v1/users/{user}/signals", params={**params, "names": signal.name})
        if one.status_code == 200:
            out[signal.name] = (one.json()["signals"][signal.name]["value"],)
            continue
        assert one.status_code == 422, one.text
        assert one.json()["error"] == "as_of_unavailable", one.text
        assert one.json()["signal"] == signal.name, one.text
        out[signal.name] = None
    return out


def test_as_of_in_the_context_is_refused(tmp_path: Path, history: History) -> None:
    write_labels(tmp_path / "labels.parquet", history, 2, seed=4)
    with pytest.raises(ContextError) as caught:
        training_set(
            TrainingJob(
                tmp_path / "labels.parquet",
                "unused",
                settings_for(tmp_path),
                tmp_path / "o.parquet",
                contexts=("as_of=5",),
            )
        )
    assert caught.value.parameter == "as_of"


def test_labels_in_a_directory_of_parts_read_as_the_one_file(
    tmp_path: Path, history: History
) -> None:
    """A file is read on its own, a directory (as Spark writes labels) as a dataset of parts:
    the same rows either way, in the parts' order."""
    write_labels(tmp_path / "labels.parquet", history, 30, seed=4)
    whole = pq.read_table(tmp_path / "labels.parquet")
    (tmp_path / "parts").mkdir()
    pq.write_table(whole.slice(0, 12), tmp_path / "parts" / "part-0.parquet")
    pq.write_table(whole.slice(12), tmp_path / "parts" / "part-1.parquet")
    from_file = read_labels(tmp_path / "labels.parquet", "user_id", "ts")
    from_parts = read_labels(tmp_path / "parts", "user_id", "ts")
    assert from_parts[1] == from_file[1]
    assert from_parts[0].to_pylist() == from_file[0].to_pylist() == whole.to_pylist()


SHADOWED = """
from usersignals import DecayedScores, Signal, days
from usersignals.examples.reference import INTEREST_WEIGHTS, SIGNALS, items

category_interest_v2 = Signal(
    name="category_interest",
    version=2,
    shadow={shadow},
    enrich=[items.fields("category")],
    aggregate=DecayedScores(key="category", half_life=days(1), weights=INTEREST_WEIGHTS, top_k=5),
)
SIGNALS = [*(s for s in SIGNALS if {shadow} or s.name != "category_interest"), category_interest_v2]
"""


def test_a_training_set_of_chosen_versions_a_shadow_one_included(
    tmp_path: Path, history: History
) -> None:
    """Found by an author's trial: a training set held every signal's default version and
    nothing else, so a shadow version (the one to try before a cut-over) could not be
    trained on, and the file did not say which version a column held. ``signals`` chooses
    the columns (a name: its served version; ``name@version``: exactly that one, a column of
    that name), and each feature field's metadata names its version and context."""
    write_labels(tmp_path / "labels.parquet", history, 40, seed=5)
    archive = write_parquet_archive(tmp_path / "archive", history)
    tables = {}
    for shadow in (True, False):
        module = tmp_path / f"shadowed_{shadow}.py"
        module.write_text(SHADOWED.format(shadow=shadow))
        store = tmp_path / f"store_{shadow}"
        new_store(store, history).close()
        chosen = ("category_interest", "category_interest@2") if shadow else ()
        out = tmp_path / f"features_{shadow}.parquet"
        job = TrainingJob(
            tmp_path / "labels.parquet", str(archive), settings_for(store, signals=str(module)),
            out, contexts=("window=7d",), signals=chosen,
        )  # fmt: skip
        training_set(job)
        tables[shadow] = pq.read_table(out)
    shadowed, served = tables[True], tables[False]
    assert shadowed.column_names == ["user_id", "ts", "label", "category_interest",
                                     "category_interest@2"]  # fmt: skip
    # The shadow version's column is what the version gives once it is served.
    assert shadowed["category_interest@2"] == served["category_interest"]
    assert shadowed["category_interest"] != shadowed["category_interest@2"]
    fields = {field.name: field.metadata for field in shadowed.schema}
    assert fields["category_interest"] == {
        b"usersignals.signal": b"category_interest@1",
        b"usersignals.context": b"window=7d",
    }
    assert fields["category_interest@2"][b"usersignals.signal"] == b"category_interest@2"
    assert fields["user_id"] is None


def test_chosen_signals_are_checked(tmp_path: Path) -> None:
    registry = SignalRegistry.from_module(REFERENCE)
    with pytest.raises(SignalNotFoundError, match="category_intrest"):
        feature_columns(registry, (), ("category_intrest",))
    with pytest.raises(ConfigurationError, match="action_counts@1 chosen twice"):
        feature_columns(registry, (), ("action_counts", "action_counts@1"))
    columns = feature_columns(registry, ("window=1d", "window=7d"), ("action_counts@1",))
    assert [c.name for c in columns] == ["action_counts@1[window=1d]", "action_counts@1[window=7d]"]


def test_the_command_takes_the_signals_to_write(tmp_path: Path, history: History) -> None:
    write_labels(tmp_path / "labels.parquet", history, 10, seed=6)
    new_store(tmp_path / "store", history).close()
    out = tmp_path / "features.parquet"
    done = subprocess.run(
        [str(BIN / "usersignals"), "training-set", "--labels", str(tmp_path / "labels.parquet"),
         "--events", str(write_parquet_archive(tmp_path / "archive", history)), "--out", str(out),
         "--signal", "category_interest@1,action_counts", "-s", "taste_embedding",
         "--workers", "1", "--store", str(tmp_path / "store"), "--signals", REFERENCE],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    names = pq.read_schema(out).names
    assert names == ["user_id", "ts", "label", "category_interest@1", "action_counts",
                     "taste_embedding"]  # fmt: skip
