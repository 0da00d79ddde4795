"""Kafka messages that carry no decodable event, against a real broker (issue 9, item 1).

A value holding a byte that is not UTF-8, an empty value and a null value must each become a
dead letter with its reason; the processor must neither exit nor skip them silently, and the
good events around them must be applied.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from confluent_kafka import Producer
from test_kafka import (
    prepare_store,
    produce,
    read_topic,
    records,
    reference_values,
    start_processor,
    stop,
    wait_caught_up,
)

from usersignals.devtools.broker import LocalBroker, create_topic, free_port


def test_undecodable_empty_and_null_values_are_dead_lettered_with_their_reason(
    broker: LocalBroker, tmp_path: Path
) -> None:
    topic = "undecodable"
    values, items = reference_values(1_000, seed=9)
    not_utf8 = values[0][1].replace(b'"event_id":"', b'"event_id":"\xff', 1)
    bad: list[tuple[bytes, bytes | None]] = [
        (b"u-bad", not_utf8),
        (b"u-bad", b""),
        (b"u-bad", None),
        (b"u-bad", b" \r\n\t"),  # blank: empty too
    ]
    mixed = values[:300] + bad[:1] + values[300:600] + bad[1:] + values[600:]
    ends = produce(broker.bootstrap, topic, mixed)  # type: ignore[arg-type]
    store = tmp_path / "store"
    prepare_store(store, items)
    metrics_port = free_port()
    process = start_processor(
        broker.bootstrap, topic, "g-undecodable", store, "--metrics-port", str(metrics_port)
    )
    wait_caught_up(broker.bootstrap, "g-undecodable", topic, ends, timeout_s=90)
    assert process.poll() is None, "the processor stopped on bad input"
    metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    code, err = stop(process)
    assert code == 0, err
    assert "Traceback" not in err
    assert "1,000 events" in err
    assert "4 dead letters" in err
    for reason, count in (("invalid_utf8", 1), ("empty_value", 2), ("null_value", 1)):
        assert f'usersignals_dead_letters_total{{reason="{reason}"}} {count}.0' in metrics
    assert {key[2:] for key in records(store)} == {key for key, _ in values}

    letters = read_topic(broker.bootstrap, f"{topic}.dead", 4)
    by_reason = {dict(m.headers())["reason"].decode(): m for m in letters}
    assert sorted(by_reason) == ["empty_value", "invalid_utf8", "null_value"]
    assert by_reason["invalid_utf8"].value() == not_utf8
    for message in letters:
        assert int(dict(message.headers())["source.offset"]) >= 0
        assert message.key() == b"u-bad"  # kept, as for an event that does not decode


def test_a_value_too_large_to_dead_letter_whole_is_truncated_and_processing_goes_on(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """Found by the operator's trial: a value of about 1 MB (the broker took it) is an
    ``oversized`` event, but its dead letter — the value plus the reason headers — was over
    the producer's 1,000,000-byte limit. The processor exited with MSG_SIZE_TOO_LARGE, and
    again at every restart on the same message: one bad message stopped the stream for good.
    Its dead letter now carries the value's start and its full length."""
    topic = "huge"
    values, items = reference_values(200, seed=11)
    huge = b'{"pad":"' + b"x" * 999_950 + b'"}'
    create_topic(broker.bootstrap, topic, 1)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "message.max.bytes": 2_000_000})
    for key, value in [*values[:100], (b"u-huge", huge), *values[100:]]:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0
    store = tmp_path / "store"
    prepare_store(store, items)
    process = start_processor(broker.bootstrap, topic, "g-huge", store)
    try:
        wait_caught_up(broker.bootstrap, "g-huge", topic, {0: 201}, timeout_s=30)
    finally:
        code, err = stop(process)
    assert code == 0, err
    assert "200 events" in err
    assert "1 dead letters" in err
    assert {key[2:] for key in records(store)} == {key for key, _ in values}
    [letter] = read_topic(broker.bootstrap, f"{topic}.dead", 1)
    headers = dict(letter.headers())
    assert headers["reason"] == b"oversized"
    assert headers["value.length"] == str(len(huge)).encode()
    value = letter.value()
    assert value
    assert huge.startswith(value)
    assert len(value) < len(huge)
