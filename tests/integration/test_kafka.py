"""Kafka ingestion against a real Kafka-protocol broker (Tansu) on loopback.

The processor is the real ``usersignals run --kafka`` command. "Caught up" is decided from the
group's committed offsets against the offsets the producer was told it wrote (the test broker
under-reports its high watermark, so that is not used).
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from kafka_groups import QUICK_GROUP_ENV

from stopping import sigterm_and_communicate
from usersignals.demo import workload_spec
from usersignals.devtools.broker import LocalBroker, free_port
from usersignals.enrich.tables import load_table
from usersignals.ingest.kafka import create_topic
from usersignals.ingest.synthetic import item_records, iter_event_chunks
from usersignals.state import RocksStore
from usersignals.state.redis import RedisStore
from waiting import wait_for

BIN = Path(sys.executable).parent
PARTITIONS = 3
# Every processor a test starts, so that one a failed test leaves running is stopped too.
STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def stop_leftover_processors() -> Iterator[None]:
    yield
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


def produce(bootstrap: str, topic: str, values: list[tuple[bytes, bytes]]) -> dict[int, int]:
    """Produce keyed values; returns the next offset of every partition written."""
    create_topic(bootstrap, topic, PARTITIONS)
    ends: dict[int, int] = {}

    def delivered(error: object, message: Message) -> None:
        assert error is None, error
        partition, offset = message.partition(), message.offset()
        assert partition is not None
        assert offset is not None
        ends[partition] = max(ends.get(partition, 0), offset + 1)

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for key, value in values:
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0
    return ends


def reference_values(events: int, seed: int) -> tuple[list[tuple[bytes, bytes]], list[dict]]:
    spec = workload_spec(events, seed)
    encoder = msgspec.json.Encoder()
    records = [record for chunk in iter_event_chunks(spec) for record in chunk]
    values = [(str(r["user_id"]).encode(), encoder.encode(r)) for r in records]
    items = list(item_records(spec, sorted({str(r["item_id"]) for r in records})))
    return values, items


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets, read with the admin API (a consumer would join it)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic, p) for p in range(PARTITIONS)]
    )
    result = admin.list_consumer_group_offsets([request])[group].result(timeout=10)
    return {p.partition: p.offset for p in result.topic_partitions}


def committed_total(bootstrap: str, group: str, topic: str) -> int:
    """Events the group has committed, over all partitions (no commit yet counts 0)."""
    return sum(max(offset, 0) for offset in committed(bootstrap, group, topic).values())


def prepare_store(path: Path, items: list[dict]) -> None:
    store = RocksStore(path)
    try:
        jsonl = path.parent / f"{path.name}-items.jsonl"
        jsonl.write_bytes(msgspec.json.Encoder().encode_lines(items))
        load_table(store.table("items"), jsonl, key="item_id")
    finally:
        store.close()


def start_processor(
    bootstrap: str,
    topic: str,
    group: str,
    store: Path,
    *extra: str,
    env_extra: dict[str, str] | None = None,
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        **(env_extra or {}),
        "USERSIGNALS_KAFKA__GROUP_ID": group,
        **QUICK_GROUP_ENV,
        "USERSIGNALS_KAFKA__BATCH_MAX_EVENTS": "5000",
        "USERSIGNALS_KAFKA__DEAD_LETTER_TOPIC": f"{topic}.dead",
    }
    process = subprocess.Popen(
        [str(BIN / "usersignals"), "run", "--kafka", bootstrap, "--topic", topic,
         "--store", str(store), *extra],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    STARTED.append(process)
    return process


def wait_caught_up(
    bootstrap: str, group: str, topic: str, ends: dict[int, int], timeout_s: float
) -> None:
    def caught_up() -> bool:
        offsets = committed(bootstrap, group, topic)
        return all(offsets.get(p, -1) >= end for p, end in ends.items())

    wait_for(caught_up, timeout_s, f"group {group} to commit up to {ends}", poll_s=0.2)


def wait_committed(
    bootstrap: str, group: str, topic: str, at_least: int, process: subprocess.Popen[str]
) -> int:
    """Wait until ``group`` has committed ``at_least`` events; returns how many it has."""
    return wait_for(
        lambda: (n := committed_total(bootstrap, group, topic)) >= at_least and n,
        300,
        f"group {group} to commit {at_least:,} events",
        alive=process,
    )


def metric(port: int, name: str) -> float:
    """A metric of the processor's Prometheus metrics, summed over its labels (0 before it
    exists)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.TransportError:  # the processor has not opened its metrics port yet
        return 0.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + " ", name + "{"))
    )


def failed_store_operations(port: int) -> float:
    """Failed operations on the state store, retried: its writes (the engine) and its reads as
    a lookup source (the Materializer holds the batch), whichever the outage hit."""
    return metric(port, "usersignals_store_failures_total") + metric(
        port, "usersignals_lookup_failures_total"
    )


def stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    return sigterm_and_communicate(process, timeout_s=60)


class CleanReplay:
    """One uninterrupted processor over the whole topic, in a group and a store of its own:
    the reference result. Started beside a test's faults, it runs while they wait (for a
    killed member's session to end, a store to come back)."""

    def __init__(
        self, broker: LocalBroker, topic: str, group: str, store: Path, items: list[dict]
    ) -> None:
        self.bootstrap, self.topic, self.group, self.store = broker.bootstrap, topic, group, store
        prepare_store(store, items)
        self._process = start_processor(broker.bootstrap, topic, group, store)

    def records(self, ends: dict[int, int]) -> dict[bytes, bytes]:
        """Its users' records once it has applied the topic up to ``ends``; it is stopped."""
        wait_caught_up(self.bootstrap, self.group, self.topic, ends, timeout_s=300)
        assert stop(self._process)[0] == 0
        return records(self.store)


def clean_replay(
    broker: LocalBroker,
    topic: str,
    group: str,
    store: Path,
    items: list[dict],
    ends: dict[int, int],
) -> Path:
    """The reference result, run alone: its store."""
    CleanReplay(broker, topic, group, store, items).records(ends)
    return store


def records(path: Path) -> dict[bytes, bytes]:
    store = RocksStore(path)
    try:
        return dict(store.scan(b"u:"))
    finally:
        store.close()


def read_topic(bootstrap: str, topic: str, count: int, timeout_s: float = 30) -> list[Message]:
    """At least ``count`` messages of ``topic`` from its start (fewer after ``timeout_s``),
    its partitions assigned: joining a consumer group took the local broker about 24 s."""
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-reader"})
    partitions = reader.list_topics(topic, timeout=10).topics[topic].partitions
    reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    messages: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(messages) < count and time.monotonic() < deadline:
        messages += [m for m in reader.consume(10, 0.2) if m.error() is None]
    reader.close()
    return messages


def test_consumes_into_the_store_dead_letters_bad_events_and_stops_cleanly(
    broker: LocalBroker, tmp_path: Path
) -> None:
    topic = "consume"
    values, items = reference_values(3_000, seed=5)
    bad = [
        (b"u-bad", b"{not json"),
        (b"u-bad", b'{"event_id": "x", "user_id": "u-bad"}'),
        (b"u-bad", b'{"event_id":"x","user_id":"u-bad","item_id":"i","action":"click",'
                   b'"surface":"home","ts":"soon"}'),
    ]  # fmt: skip
    mixed = values[:1000] + bad[:1] + values[1000:2000] + bad[1:] + values[2000:]
    ends = produce(broker.bootstrap, topic, mixed)
    store = tmp_path / "store"
    prepare_store(store, items)
    metrics_port = free_port()
    process = start_processor(
        broker.bootstrap, topic, "g-consume", store, "--metrics-port", str(metrics_port)
    )
    wait_caught_up(broker.bootstrap, "g-consume", topic, ends, timeout_s=60)
    positions = [
        f'usersignals_consumer_position{{partition="{topic}/{partition}"}} {end}.0'
        for partition, end in ends.items()
    ]

    def every_position_reported() -> str | None:
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        return text if all(position in text for position in positions) else None

    metrics = wait_for(every_position_reported, 30, "the consumer positions in /metrics")
    code, err = stop(process)
    assert code == 0, err
    assert "3,000 events" in err
    assert "3 dead letters" in err
    assert 'usersignals_dead_letters_total{reason="malformed_json"} 1.0' in metrics
    assert "usersignals_events_processed_total 3000.0" in metrics
    assert "usersignals_freshness_seconds_bucket" in metrics
    users = {key for key, _ in values}
    stored = records(store)
    assert {key[2:] for key in stored} == users  # every user with a good event has state

    letters = read_topic(broker.bootstrap, f"{topic}.dead", 3)
    assert sorted(m.value() for m in letters) == sorted(value for _, value in bad)
    reasons = sorted(dict(m.headers())["reason"].decode() for m in letters)
    assert reasons == ["malformed_json", "missing_field", "wrong_type"]
    for message in letters:
        headers = dict(message.headers())
        assert headers["source.topic"] == topic.encode()
        assert int(headers["source.offset"]) >= 0
        # Its message's key, kept (found in an operator's trial: None, a value that cannot
        # be parsed then named no user).
        assert message.key() == b"u-bad"

    # Restarted on the caught-up topic, the processor reports every partition it holds, lag
    # 0, before any new message: librdkafka's position is unknown until one is consumed, and
    # the series were missing (an alert on an absent lag series fired on every restart).
    process = start_processor(
        broker.bootstrap, topic, "g-consume", store, "--metrics-port", str(metrics_port)
    )
    lags = [f'usersignals_consumer_lag{{partition="{topic}/{p}"}} 0.0' for p in ends]

    def every_lag_reported() -> str | None:
        try:
            text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        except httpx.TransportError:  # not listening yet
            return None
        return text if all(lag in text for lag in lags + positions) else None

    try:
        wait_for(every_lag_reported, 30, "every partition's lag after a restart")
    finally:
        code, err = stop(process)
    assert code == 0, err


def test_sigkill_at_random_points_then_catch_up_equals_one_clean_replay(
    broker: LocalBroker, tmp_path: Path
) -> None:
    topic = "crash"
    values, items = reference_values(100_000, seed=9)
    ends = produce(broker.bootstrap, topic, values)
    # The reference runs beside the crashes (a group and a store of its own): they spend
    # most of their time waiting for the group to drop each killed member (its session
    # timeout), and the test took 50 s one after the other.
    clean = CleanReplay(broker, topic, "g-clean", tmp_path / "clean", items)

    crash_store = tmp_path / "crashed"
    prepare_store(crash_store, items)
    total = sum(ends.values())
    rng = random.Random(13)
    # Kill points by events committed, not by wall-clock time (which, on a loaded machine,
    # may fall before the group join or after the end): one in each of the first three
    # quarters of the stream, between 5 % and 70 % of it.
    targets = [int(total * (quarter + 0.2 + 0.6 * rng.random()) / 4) for quarter in range(3)]
    landed: list[int] = []
    for target in targets:
        process = start_processor(broker.bootstrap, topic, "g-crash", crash_store)
        wait_committed(broker.bootstrap, "g-crash", topic, target, process)
        process.kill()  # SIGKILL: no chance to finish anything
        process.communicate(timeout=30)
        landed.append(committed_total(broker.bootstrap, "g-crash", topic))
    # Each kill landed mid-stream: past its target, before the end, later than the last.
    assert all(target <= at <= total - 1 for target, at in zip(targets, landed, strict=True))
    assert landed == sorted(set(landed)), landed
    survivor = start_processor(broker.bootstrap, topic, "g-crash", crash_store)
    wait_caught_up(broker.bootstrap, "g-crash", topic, ends, timeout_s=300)
    assert stop(survivor)[0] == 0

    expected, got = clean.records(ends), records(crash_store)
    assert len(got) == len(expected)
    assert got.keys() == expected.keys()
    different = [key for key in expected if got[key] != expected[key]]
    assert different == [], f"{len(different)} users differ, e.g. {different[:3]}"


def test_a_rebalance_between_two_processors_loses_nothing_and_counts_nothing_twice(
    broker: LocalBroker, redis_url: str, tmp_path: Path
) -> None:
    """Two processors in one group over a shared Redis store share the stream, then one leaves
    mid-stream; the result equals one clean replay, byte for byte.

    The stream is produced in two parts, each only once the group is where the test needs it,
    so "mid-stream" holds however fast the processors run: the first part once both
    processors hold partitions, the second once one of them has left.
    """
    topic = "rebalance"
    values, items = reference_values(90_000, seed=17)
    ends: dict[int, int] = {}

    def produce_part(part: list[tuple[bytes, bytes]]) -> None:
        for partition, end in produce(broker.bootstrap, topic, part).items():
            ends[partition] = max(ends.get(partition, 0), end)

    create_topic(broker.bootstrap, topic, PARTITIONS)
    shared = RedisStore(redis_url, namespace="rebalance")
    jsonl = tmp_path / "items.jsonl"
    jsonl.write_bytes(msgspec.json.Encoder().encode_lines(items))
    load_table(shared.table("items"), jsonl, key="item_id")
    redis_env = {
        "USERSIGNALS_STORE__BACKEND": "redis",
        "USERSIGNALS_STORE__REDIS_URL": redis_url,
        "USERSIGNALS_STORE__REDIS_NAMESPACE": "rebalance",
        "USERSIGNALS_KAFKA__BATCH_MAX_EVENTS": "2000",
    }
    ports = free_port(), free_port()
    first, second = (
        start_processor(broker.bootstrap, topic, "g-shared", tmp_path / f"unused-{name}",
                        "--metrics-port", str(port), env_extra=redis_env)
        for name, port in zip("ab", ports, strict=True)
    )  # fmt: skip
    for port, process in zip(ports, (first, second), strict=True):
        wait_for(
            lambda port=port: metric(port, "usersignals_consumer_assigned_partitions") > 0,
            120,
            "both processors to hold partitions",
            poll_s=0.2,
            alive=process,
        )
    produce_part(values[:60_000])
    for port, process in zip(ports, (first, second), strict=True):  # both share the work
        wait_for(
            lambda port=port: metric(port, "usersignals_events_processed_total") > 0,
            120,
            "both processors to apply events",
            poll_s=0.1,
            alive=process,
        )
    first_code, first_err = stop(first)  # leaves mid-stream: a rebalance
    assert first_code == 0, first_err
    produce_part(values[60_000:])
    wait_caught_up(broker.bootstrap, "g-shared", topic, ends, timeout_s=300)
    second_code, second_err = stop(second)
    assert second_code == 0, second_err
    assert " 0 events in" not in first_err
    assert " 0 events in" not in second_err

    clean_store = clean_replay(broker, topic, "g-clean-r", tmp_path / "clean", items, ends)
    expected = records(clean_store)
    got = dict(shared.scan(b"u:"))
    shared.close()
    assert got.keys() == expected.keys()
    different = [key for key in expected if got[key] != expected[key]]
    assert different == [], f"{len(different)} users differ, e.g. {different[:3]}"


def test_the_same_events_on_two_partitions_are_applied_once(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """``event_id`` is an idempotency key across partitions: a producer that wrote a batch
    twice, the second time to other partitions, changes no state."""
    from usersignals.assembly import build_registry
    from usersignals.config import Settings
    from usersignals.enrich import Materializer, TableSource
    from usersignals.events import EventDecoder
    from usersignals.events.model import Position
    from usersignals.processing.batch import MicroBatch
    from usersignals.processing.engine import Engine
    from usersignals.state.codec import decode_record

    topic = "repeats"
    values, items = reference_values(1_500, seed=11)
    create_topic(broker.bootstrap, topic, PARTITIONS)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    ends: dict[int, int] = {}

    def delivered(error: object, message: Message) -> None:
        assert error is None, error
        partition, offset = message.partition(), message.offset()
        assert partition is not None
        assert offset is not None
        ends[partition] = max(ends.get(partition, 0), offset + 1)

    for copy in range(2):
        for n, (key, value) in enumerate(values):
            producer.produce(topic, value=value, key=key, partition=(n + copy) % PARTITIONS,
                             on_delivery=delivered)  # fmt: skip
            producer.poll(0)
    assert producer.flush(60) == 0

    store = tmp_path / "store"
    prepare_store(store, items)
    metrics_port = free_port()
    # The workload spans 14 days: a horizon that covers it makes every copy a repeat.
    process = start_processor(
        broker.bootstrap, topic, "g-repeats", store, "--metrics-port", str(metrics_port),
        env_extra={"USERSIGNALS_PROCESSING__DEDUPE_HORIZON_MS": str(20 * 86_400_000)},
    )  # fmt: skip
    wait_caught_up(broker.bootstrap, "g-repeats", topic, ends, timeout_s=120)
    metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    code, err = stop(process)
    assert code == 0, err
    assert "usersignals_repeated_event_ids_total 1500.0" in metrics
    assert "1,500 repeated event ids dropped" in " ".join(err.split())

    # The same events once, in-process: every signal's state is byte-identical.
    clean_path = tmp_path / "clean"
    prepare_store(clean_path, items)
    clean = RocksStore(clean_path)
    try:
        engine = Engine(
            build_registry(Settings.load(environ={})),
            clean,
            Materializer({"items": TableSource("items", clean.table("items"))}),
        )
        decoded = EventDecoder().decode_block([value for _, value in values])
        positions = [Position("once", n) for n in range(len(decoded.events))]
        engine.process(MicroBatch(decoded.events, positions))
        expected = {key: decode_record(key, raw).states for key, raw in clean.scan(b"u:")}
    finally:
        clean.close()
    got = {key: decode_record(key, raw).states for key, raw in records(store).items()}
    assert got == expected


def group_log(broker: LocalBroker, group: str, lines: int = 40) -> str:
    """The broker's last ``lines`` about consumer group ``group`` (its joins and syncs, their
    members and error codes), each cut to 600 characters, the terminal's colours left out."""
    if broker.log is None:
        return "(not logged)"
    said = re.sub(r"\x1b\[[0-9;]*m", "", broker.log.read_text(errors="replace")).splitlines()
    about = [
        line[:600]
        for line in said
        if f'group_id="{group}"' in line and not re.search(r" (new|enter|exit|close.*)$", line)
    ]
    return "\n".join(about[-lines:])


def test_a_processor_that_holds_no_partition_says_for_how_long(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """Found by the operator's trial: a consumer group stuck rebalancing left both
    processors without a partition for 9 minutes, while /readyz said ready and no lag series
    existed, so nothing could alert. `usersignals_consumer_unassigned_seconds` says how long
    a processor has held no partition (0 while it holds one): a group that holds fewer
    partitions than the topic has, for minutes, is an alert. Here two processors share a
    topic of one partition: one of them holds it, the other none."""
    topic = "one-partition"
    create_topic(broker.bootstrap, topic, 1)
    ports = [free_port(), free_port()]
    processes: list[subprocess.Popen[str]] = []
    seen: list[tuple[list[float], list[float]]] = []

    def observed() -> tuple[list[float], list[float]]:
        held = [metric(port, "usersignals_consumer_assigned_partitions") for port in ports]
        idle = [metric(port, "usersignals_consumer_unassigned_seconds") for port in ports]
        seen.append((held, idle))
        return held, idle

    def start(number: int) -> subprocess.Popen[str]:
        store, extra = tmp_path / f"store-{number}", ("--metrics-port", str(ports[number]))
        processes.append(start_processor(broker.bootstrap, topic, f"g-{topic}", store, *extra))
        return processes[-1]

    # One after the other: the first holds the partition before the second joins, as when a
    # processor is added to a running group (two members joining at once is a race the
    # rebalance test covers; here the metric is under test).
    split_up = False
    try:
        first = start(0)
        wait_for(lambda: observed()[0][0] == 1, 60, "the first processor to hold it", alive=first)
        second = start(1)

        def split() -> bool:
            held, idle = observed()
            return held == [1, 0] and idle[1] >= 3 and idle[0] == 0

        wait_for(split, 60, "the second processor to hold none for 3 s", alive=second)
        split_up = True
    finally:
        logs = [stop(process)[1] for process in processes]
        if not split_up:  # what the processors saw and said, to tell a stuck group apart
            print("held and idle seconds, last seen:", seen[-3:])
            for number, log in enumerate(logs):
                print(f"processor {number} said:\n{log[-4000:]}")
            print(f"the broker said of the group:\n{group_log(broker, f'g-{topic}')}")
