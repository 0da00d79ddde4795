"""A partition whose offsets went backwards: its new events are applied, none skipped.

Found by an operations trial: a broker restarted without its log (or a topic deleted and
made again) starts each partition's offsets from 0 again. The users' stored progress
(the offset of the last event applied, per partition) was past those offsets, so every new
event below it was skipped as already applied: the trial lost 220 of 2,617 events, with
nothing but a counter to show for it. An event at or below its user's progress is now
skipped only if its id is among the ones the record keeps for its hour (the dedupe's
fingerprints): a replay's always is, a new event's is not.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_kafka import (
    BIN,
    metric,
    prepare_store,
    produce,
    reference_values,
    start_processor,
    stop,
    wait_caught_up,
)

from usersignals.aggregations.context import ReadContext
from usersignals.devtools.broker import LocalBroker, free_port
from usersignals.serving.reader import SignalReader
from usersignals.signals.registry import SignalRegistry
from usersignals.state import RocksStore
from waiting import wait_for

TOPIC = "reset"


@pytest.fixture
def restartable_broker() -> Iterator[LocalBroker]:
    """A broker of this test's own, on a port it keeps across a restart."""
    broker = LocalBroker(free_port())
    with broker:
        yield broker


def signal_values(store_path: Path, users: set[str], now_ms: int) -> dict[str, object]:
    store = RocksStore(store_path, read_only=True)
    try:
        reader = SignalReader(SignalRegistry.from_module("usersignals.examples.reference"), store)
        context = ReadContext.parse({}, now_ms)
        return {
            user: {
                name: answer.value
                for name, answer in reader.read(user, None, context).signals.items()
            }
            for user in sorted(users)
        }
    finally:
        store.close()


def expected_values(
    tmp_path: Path, values: list[tuple[bytes, bytes]], items: list[dict], now_ms: int
) -> dict[str, object]:
    """What one pass over all the events answers: ``usersignals replay`` of them as a file
    (the same engine and signals; no second broker to start)."""
    users = {key.decode() for key, _ in values}
    store = tmp_path / "clean"
    prepare_store(store, items)
    events = tmp_path / "all.jsonl"
    events.write_bytes(b"".join(value + b"\n" for _, value in values))
    done = subprocess.run(
        [str(BIN / "usersignals"), "replay", str(events), "--store", str(store)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return signal_values(store, users, now_ms)


def first_run(
    broker: LocalBroker, tmp_path: Path, seed: int, metrics_port: int | None = None
) -> tuple[list[tuple[bytes, bytes]], list[dict], Path, subprocess.Popen[str]]:
    """900 reference events (their items in a new store), the first 600 on the topic, and a
    processor that has committed them: the events, items, store and the processor."""
    values, items = reference_values(900, seed=seed)
    store = tmp_path / "store"
    prepare_store(store, items)
    ends = produce(broker.bootstrap, TOPIC, values[:600])
    extra = ("--metrics-port", str(metrics_port)) if metrics_port else ()
    process = start_processor(broker.bootstrap, TOPIC, "g", store, *extra)
    wait_caught_up(broker.bootstrap, "g", TOPIC, ends, timeout_s=120)
    return values, items, store, process


def test_a_broker_restarted_without_its_log_between_two_runs_loses_nothing(
    restartable_broker: LocalBroker, tmp_path: Path
) -> None:
    values, items, store, process = first_run(restartable_broker, tmp_path, seed=31)
    assert stop(process)[0] == 0

    restartable_broker.stop()  # its log is in memory: gone, offsets from 0 again
    restartable_broker.start()
    ends = produce(restartable_broker.bootstrap, TOPIC, values[600:])
    port = free_port()
    process = start_processor(
        restartable_broker.bootstrap, TOPIC, "g", store, "--metrics-port", str(port)
    )
    wait_caught_up(restartable_broker.bootstrap, "g", TOPIC, ends, timeout_s=120)
    skipped = metric(port, "usersignals_already_applied_events_total")
    rewound = metric(port, "usersignals_rewound_events_total")
    code, err = stop(process)
    assert code == 0, err
    assert skipped == 0
    assert rewound > 0
    assert "offsets went backwards" in err

    now_ms = int(time.time() * 1000)
    users = {key.decode() for key, _ in values}
    assert signal_values(store, users, now_ms) == expected_values(tmp_path, values, items, now_ms)


def test_a_broker_restarted_without_its_log_under_a_running_processor_loses_nothing(
    restartable_broker: LocalBroker, tmp_path: Path
) -> None:
    port = free_port()
    values, items, store, process = first_run(restartable_broker, tmp_path, 32, port)

    restartable_broker.stop()
    restartable_broker.start()
    produce(restartable_broker.bootstrap, TOPIC, values[600:])
    wait_for(
        lambda: metric(port, "usersignals_events_processed_total") >= len(values),
        120,
        "the processor to take the events produced after the restart",
        alive=process,
    )
    skipped = metric(port, "usersignals_already_applied_events_total")
    code, err = stop(process)
    assert code == 0, err
    assert skipped == 0

    now_ms = int(time.time() * 1000)
    users = {key.decode() for key, _ in values}
    assert signal_values(store, users, now_ms) == expected_values(tmp_path, values, items, now_ms)
