"""Kafka consumer settings from the environment, and librdkafka's errors in our error tree
(issue 9 item 11, issue 12 item 7), against a real Kafka-protocol broker."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
from kafka_groups import QUICK_GROUP_ENV
from test_kafka import produce

from usersignals.config import Settings
from usersignals.devtools.broker import LocalBroker, free_port
from usersignals.errors import ConfigurationError
from usersignals.ingest import kafka_dead_letter
from usersignals.ingest.kafka import (
    FETCH_WAIT_MAX_MS,
    KafkaBatch,
    KafkaSource,
    consumer_config,
    librdkafka_settings,
)

BIN = Path(sys.executable).parent


def topic_settings(broker: LocalBroker, topic: str, **kafka: str) -> Settings:
    """Settings from environment variables, consuming ``topic`` in a group of its own, with
    ``kafka`` settings beside (``consumer__client_id``: USERSIGNALS_KAFKA__CONSUMER__CLIENT_ID)."""
    return Settings.load(
        environ={
            "USERSIGNALS_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
            "USERSIGNALS_KAFKA__TOPIC": topic,
            "USERSIGNALS_KAFKA__GROUP_ID": f"g-{topic}",
            **QUICK_GROUP_ENV,
            **{f"USERSIGNALS_KAFKA__{name.upper()}": value for name, value in kafka.items()},
        }
    )


def test_underscored_names_become_librdkafka_names() -> None:
    assert librdkafka_settings({"fetch_max_bytes": "1024", "security.protocol": "plaintext"}) == {
        "fetch.max.bytes": "1024",
        "security.protocol": "plaintext",
    }


def test_a_fetch_waits_at_most_fetch_wait_max_ms_unless_the_settings_say_otherwise() -> None:
    """librdkafka's 500 ms default added up to 500 ms to every event's freshness against a
    broker that holds fetches to their limit (see FETCH_WAIT_MAX_MS)."""
    default = Settings.load(environ={"USERSIGNALS_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9"})
    assert consumer_config(default.kafka)["fetch.wait.max.ms"] == FETCH_WAIT_MAX_MS < 500
    chosen = Settings.load(
        environ={
            "USERSIGNALS_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9",
            "USERSIGNALS_KAFKA__CONSUMER__FETCH_WAIT_MAX_MS": "200",
        }
    )
    assert consumer_config(chosen.kafka)["fetch.wait.max.ms"] == "200"


def test_consumer_settings_from_environment_variables_reach_librdkafka(
    broker: LocalBroker,
) -> None:
    topic = "env-settings"
    event = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "action": "save",
             "surface": "home", "ts": 1_767_225_600_000}  # fmt: skip
    produce(broker.bootstrap, topic, [(b"u1", msgspec.json.encode(event))])
    settings = topic_settings(
        broker,
        topic,
        consumer__fetch_max_bytes="1048576",
        consumer__client_id="usersignals-env-test",
    )
    assert settings.kafka.consumer == {
        "heartbeat_interval_ms": "400",  # QUICK_GROUP_ENV's
        "fetch_max_bytes": "1048576",
        "client_id": "usersignals-env-test",
    }
    source = KafkaSource(settings.kafka)
    try:
        lines: list[bytes] = []
        deadline = time.monotonic() + 30
        while not lines and time.monotonic() < deadline:
            lines = source.next_batch().lines
        assert lines == [msgspec.json.encode(event)]
    finally:
        source.close()


def test_an_unknown_consumer_property_is_a_configuration_error_naming_it(
    broker: LocalBroker,
) -> None:
    settings = Settings.load(
        environ={
            "USERSIGNALS_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
            "USERSIGNALS_KAFKA__CONSUMER__NO_SUCH_PROPERTY": "1",
        }
    )
    with pytest.raises(ConfigurationError, match=r"no\.such\.property"):
        KafkaSource(settings.kafka)


def consume_for(source: KafkaSource, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        source.next_batch()


def test_a_topic_that_does_not_exist_yet_is_waited_for_and_said_once(
    broker: LocalBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """librdkafka reports the subscribed topic missing on every poll; the processor waits
    for it (the API's first produce may create it) and says so once a minute, rather than
    stopping as for other consume errors (a `BrokerError`)."""
    settings = Settings.load(
        environ={
            "USERSIGNALS_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
            "USERSIGNALS_KAFKA__TOPIC": "no-such-topic",
            **QUICK_GROUP_ENV,
            "USERSIGNALS_KAFKA__BATCH_MAX_WAIT_MS": "500",
        }
    )
    source = KafkaSource(settings.kafka)
    try:
        with caplog.at_level(logging.WARNING, logger="usersignals.ingest.kafka"):
            consume_for(source, seconds=5)
    finally:
        source.close()
    said = [r.getMessage() for r in caplog.records if "waiting for the topic" in r.getMessage()]
    assert len(said) == 1, said
    assert "no-such-topic" in said[0]


@pytest.mark.parametrize("blank", [False, True], ids=["events", "blank values"])
def test_a_batch_behind_the_stream_fills_up_from_what_is_fetched_past_its_wait(
    broker: LocalBroker, blank: bool
) -> None:
    """The wait bounds the waiting for new events, not the taking of fetched ones: a batch
    that closed at its wait with events already fetched stayed as small as one thread could
    take them in that time, so a processor behind the stream never caught up (the freshness
    probes of bench/ingest.py grew to 2-3 s at half the processor's rate). Blank values (dead
    letters) count towards the batch's bound too: a backlog of them is no endless batch."""
    topic = "batch-fills-up" + ("-blank" if blank else "")
    values = [(b"u%d" % (i % 97), b"" if blank else b"x%d" % i) for i in range(60_000)]
    produce(broker.bootstrap, topic, values)
    settings = topic_settings(broker, topic, batch_max_wait_ms="1", batch_max_events="25000")
    source = KafkaSource(settings.kafka)

    def size(batch: KafkaBatch) -> int:
        return len(batch.lines) + len(batch.bad)

    try:
        taken = 0
        deadline = time.monotonic() + 30
        while not taken and time.monotonic() < deadline:
            taken = size(source.next_batch())
        assert 0 < taken <= 25_000
        time.sleep(2)  # librdkafka fetches the rest meanwhile
        assert size(source.next_batch()) == min(25_000, 60_000 - taken)
    finally:
        source.close()


def test_a_broker_that_cannot_be_reached_is_said_once_a_minute_not_twenty_times_a_second(
    tmp_path: Path,
) -> None:
    """Found by the operator's and the consistency trials: with no broker at the address,
    librdkafka wrote "Connect ... failed: Connection refused" to stderr about 20 times a
    second (118 lines in 6 s), where the project's own warnings say an outage once a minute.
    Its log now goes through the `usersignals.kafka.client` logger, each kind of line at most
    once a minute."""
    process = subprocess.Popen(
        [str(BIN / "usersignals"), "run", "--kafka", f"127.0.0.1:{free_port()}",
         "--store", str(tmp_path / "store")],
        stderr=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("USERSIGNALS_")},
    )  # fmt: skip
    time.sleep(6)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    refused = [line for line in stderr.splitlines() if "Connection refused" in line]
    assert 0 < len(refused) <= 4, stderr  # a line for each client (consumer, producers)


def test_the_dead_letter_producer_connects_with_the_consumers_tls_and_sasl_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by the operator's trial: on a secured cluster (``kafka.consumer`` holding the
    TLS/SASL settings, as the README says), the processor's dead-letter producer was given the
    bootstrap servers alone. It could not connect: the first bad event's flush timed out after
    30 s and the processor exited, again at every restart on the same event."""
    configs: list[dict[str, object]] = []

    class Recorded:
        def __init__(self, config: dict[str, object]) -> None:
            configs.append(config)

    monkeypatch.setattr(kafka_dead_letter, "Producer", Recorded)
    settings = Settings.load(
        environ={
            "USERSIGNALS_KAFKA__BOOTSTRAP_SERVERS": "kafka-0.internal:9093",
            "USERSIGNALS_KAFKA__DEAD_LETTER_TOPIC": "bad-events",
            "USERSIGNALS_KAFKA__CONSUMER__SECURITY_PROTOCOL": "sasl_ssl",
            "USERSIGNALS_KAFKA__CONSUMER__SASL_MECHANISM": "PLAIN",
            "USERSIGNALS_KAFKA__CONSUMER__FETCH_MAX_BYTES": "1048576",
        }
    )
    letters = kafka_dead_letter.DeadLetterTopic(settings.kafka)
    [config] = configs
    assert letters.topic == "bad-events"
    assert config["bootstrap.servers"] == "kafka-0.internal:9093"
    assert config["security.protocol"] == "sasl_ssl"
    assert config["sasl.mechanism"] == "PLAIN"
    assert "fetch.max.bytes" not in config  # a consumer's setting, not a producer's


def test_a_topic_that_cannot_be_created_for_want_of_a_broker_says_so() -> None:
    """Found by the operator's trial: `produce` to a broker nobody listens on ended in
    "error: cannot create topic 'zz': " and nothing after it (the wait's TimeoutError has
    no text)."""
    from usersignals.devtools.broker import free_port
    from usersignals.errors import ConfigurationError
    from usersignals.ingest.kafka import create_topic

    bootstrap = f"127.0.0.1:{free_port()}"
    with pytest.raises(ConfigurationError) as caught:
        create_topic(bootstrap, "zz", 1, wait_s=1.0)
    assert str(caught.value) == (
        f"cannot create topic 'zz': no broker at {bootstrap} answered within 1 s"
    )
