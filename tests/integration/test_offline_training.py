"""Point-in-time training data: each label row's value is what streaming up to its time serves,
and what the HTTP API answers with ``as_of`` after a full replay."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from offline_helpers import (
    REFERENCE,
    History,
    load_items,
    new_store,
    random_history,
    settings_for,
    stream,
    write_parquet_archive,
)
from service_helpers import BIN, _stop, free_port

from usersignals import Engine, MicroBatch, ReadContext, SignalRegistry
from usersignals.enrich import Materializer, TableSource
from usersignals.errors import ContextError
from usersignals.offline.memory import MemoryStore
from usersignals.offline.training import TrainingJob, parse_context_option, training_set
from usersignals.serving import SignalReader

CONTEXTS = (
    "",
    "window=7d,actions=save,click,closeup",
    "window=1h",
    "limit=5,dedupe=true,surfaces=home",
)


@pytest.fixture(scope="module")
def history() -> History:
    return random_history(21)


def write_labels(path: Path, history: History, count: int, seed: int) -> list[tuple[str, int]]:
    """Labels at random times, some at a time shared by many users, a few at exact event times."""
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
        rows.append((rng.choice([*users, "nobody"]), ts))
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


def test_training_set_in_two_processes_is_the_same_file(tmp_path: Path, history: History) -> None:
    write_labels(tmp_path / "labels.parquet", history, 40, seed=2)
    run_training(tmp_path, history, tmp_path / "labels.parquet", tmp_path / "one.parquet")
    run_training(
        tmp_path, history, tmp_path / "labels.parquet", tmp_path / "two.parquet", workers=2
    )
    assert (tmp_path / "one.parquet").read_bytes() == (tmp_path / "two.parquet").read_bytes()


def test_training_value_equals_the_api_answer_as_of_the_label_time(
    tmp_path: Path, history: History
) -> None:
    """After a full replay, the HTTP API with ``as_of=t`` answers what the training set holds,
    for labels at or after the user's newest event (earlier, stored state already includes
    later events that some aggregations cannot take back, e.g. decayed scores)."""
    newest: dict[str, int] = {}
    for event in history.events:
        newest[event.user_id] = max(newest.get(event.user_id, 0), event.ts)
    rng = random.Random(3)
    users = sorted(newest)[:12]
    rows = [(user, newest[user] + rng.choice([0, 1, 3_600_000, 5 * 86_400_000])) for user in users]
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
    }
    server = subprocess.Popen(
        [str(BIN / "usersignals"), "serve", "--port", str(port)], env=env, cwd=tmp_path
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        for row, (user, ts) in zip(features, rows, strict=True):
            for text in CONTEXTS:
                params = {**parse_context_option(text), "as_of": str(ts)}
                answer = httpx.get(f"{base}/v1/users/{user}/signals", params=params, timeout=10)
                assert answer.status_code == 200, answer.text
                served = answer.json()["signals"]
                for name, result in served.items():
                    assert json.loads(row[f"{name}[{text}]"]) == result["value"], (name, text)
    finally:
        _stop(server)


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
