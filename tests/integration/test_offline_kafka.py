"""A backfill hands over to the real Kafka processor: no gap, no double count.

The topic (on a real Kafka-protocol broker) is exported as a data lake would hold it — JSONL
envelopes with the Kafka coordinates, in Hive-style partition folders — and backfilled up to
a time with ``usersignals backfill --commit-offsets``; the real ``usersignals run --kafka``
then continues from the committed offsets. The store must equal one clean run over the topic.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import msgspec
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from test_kafka import (
    BIN,
    clean_replay,
    committed,
    prepare_store,
    produce,
    records,
    reference_values,
    start_processor,
    stop,
    wait_caught_up,
)

from usersignals.config import Settings
from usersignals.devtools.broker import LocalBroker, create_topic, free_port
from usersignals.serving.feature_log import FeatureLog, build_sink, read_feature_log
from usersignals.serving.feature_records import FeatureLogRecord, LoggedAnswer
from usersignals.serving.feature_sinks import KafkaSink
from usersignals.serving.reader import SignalResult, UserSignals


class Envelope(msgspec.Struct):
    topic: str
    partition: int
    offset: int
    value: msgspec.Raw


def export_topic(bootstrap: str, topic: str, ends: dict[int, int], root: Path) -> Path:
    """Every message of the topic, as JSONL envelopes, one folder per partition."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "exporter"})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
    lines: dict[int, list[bytes]] = {p: [] for p in ends}
    seen = dict.fromkeys(ends, 0)
    deadline = time.monotonic() + 60
    try:
        while any(seen[p] < end for p, end in ends.items()) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            partition, offset = message.partition(), message.offset()
            assert partition is not None
            assert offset is not None
            value = msgspec.Raw(message.value() or b"")
            lines[partition].append(msgspec.json.encode(Envelope(topic, partition, offset, value)))
            seen[partition] = offset + 1
    finally:
        consumer.close()
    assert seen == ends
    for partition, rows in lines.items():
        folder = root / f"partition={partition}"
        folder.mkdir(parents=True)
        (folder / "part-0.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    return root


def test_backfill_then_the_kafka_processor_equals_one_clean_run(
    broker: LocalBroker, tmp_path: Path
) -> None:
    topic = "offline-handover"
    values, items = reference_values(3_000, seed=5)
    ends = produce(broker.bootstrap, topic, values)
    reference = records(clean_replay(broker, topic, "clean", tmp_path / "clean", items, ends))
    archive = export_topic(broker.bootstrap, topic, ends, tmp_path / "export")
    times = sorted(msgspec.json.decode(value)["ts"] for _, value in values)
    until = times[len(times) // 2]
    store = tmp_path / "store"
    prepare_store(store, items)
    env = {**os.environ, "USERSIGNALS_KAFKA__GROUP_ID": "handover"}
    done = subprocess.run(
        [str(BIN / "usersignals"), "backfill", "--events", str(archive), "--until", str(until),
         "--store", str(store), "--workers", "2", "--commit-offsets", "--kafka", broker.bootstrap],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "committed them for consumer group handover" in done.stderr
    handed = committed(broker.bootstrap, "handover", topic)
    assert 0 < sum(handed.values()) < sum(ends.values())
    processor = start_processor(broker.bootstrap, topic, "handover", store)
    wait_caught_up(broker.bootstrap, "handover", topic, ends, timeout_s=300)
    code, err = stop(processor)
    assert code == 0, err
    # It started at the hand-over offsets: nothing was read twice.
    assert "(0 already applied)" in err
    assert records(store) == reference


def logged(number: int) -> tuple[UserSignals, FeatureLogRecord]:
    counts = {"total": number, "by": {"save": number}}
    result = SignalResult("action_counts", 1, "count", counts, None, None, None)
    answer = UserSignals(f"u{number % 3}", {"action_counts": result})
    signals = {"action_counts": LoggedAnswer("action_counts", 1, counts, None)}
    params = {"window": "7d"} if number % 2 else {}
    return answer, FeatureLogRecord(answer.user_id, 1_700_000_000_000 + number, params, signals)


def test_feature_log_on_a_kafka_topic_is_a_jsonl_log_and_counts_what_it_could_not_send(
    broker: LocalBroker, tmp_path: Path
) -> None:
    topic = "served-features"
    create_topic(broker.bootstrap, topic, 1)
    settings = Settings.load(
        environ={},
        overrides={
            "kafka": {"bootstrap_servers": broker.bootstrap},
            "serving": {"feature_log_sink": "kafka", "feature_log_topic": topic},
        },
    )
    sink = build_sink(settings)
    assert isinstance(sink, KafkaSink)
    log = FeatureLog(sink, rate=1.0)
    for number in range(20):
        answer, record = logged(number)
        log.record(record.params, record.ts, answer)
    log.close()
    assert (sink.counts.written, sink.counts.failed) == (20, 0)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "feature-log"})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    messages: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + 30
    try:
        while len(messages) < 20 and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                messages.append((message.key() or b"", message.value() or b""))
    finally:
        consumer.close()
    expected = [logged(number)[1] for number in range(20)]
    assert [key.decode() for key, _ in messages] == [record.user_id for record in expected]
    # A dump of the topic's values is a JSONL feature log, as `usersignals consistency` reads.
    (tmp_path / "dump.jsonl").write_bytes(b"".join(value + b"\n" for _, value in messages))
    assert read_feature_log(tmp_path / "dump.jsonl") == expected

    # No broker: the requests go on; what could not be queued or was never acknowledged counts.
    gone = KafkaSink(
        f"127.0.0.1:{free_port()}",
        topic,
        {"message.timeout.ms": "300", "queue.buffering.max.messages": "2"},
    )
    unsent = FeatureLog(gone, rate=1.0)
    for number in range(5):
        answer, record = logged(number)
        unsent.record(record.params, record.ts, answer)
    assert gone.counts.failed >= 3  # the queue holds two; the others failed at once
    unsent.close()
    assert (gone.counts.written, gone.counts.failed) == (0, 5)


def test_the_handover_takes_consumer_settings_as_the_processor_does(broker: LocalBroker) -> None:
    """Found in review: the backfill's handover gave `kafka.consumer` to librdkafka as it
    was, so a setting from the environment (`USERSIGNALS_KAFKA__CONSUMER__HEARTBEAT_INTERVAL_MS`
    arrives as `heartbeat_interval_ms`) was "No such configuration property"."""
    from usersignals.config import KafkaSettings
    from usersignals.offline.handover import commit_backfill_offsets

    topic = "handover-names"
    create_topic(broker.bootstrap, topic, 1)
    kafka = KafkaSettings(
        bootstrap_servers=broker.bootstrap,
        topic=topic,
        group_id="g-handover-names",
        consumer={"heartbeat_interval_ms": "400", "session.timeout.ms": 6000},
    )
    assert commit_backfill_offsets(kafka, {f"{topic}/0": 0}) is True
