"""What the API's Kafka log says when a produce fails: the words must fit what happened."""

from __future__ import annotations

from confluent_kafka import KafkaError

from usersignals.ingest.kafka_log import delivery_failure


def test_a_delivery_that_timed_out_is_not_called_a_refusal() -> None:
    """Found in an operator's trial: with the broker down, the API logged "the broker refused
    the events: ..._MSG_TIMED_OUT", though no broker had answered at all."""
    message = delivery_failure(KafkaError(KafkaError._MSG_TIMED_OUT))
    assert "refused" not in message
    assert message.startswith("no broker acknowledged the events within message.timeout.ms")


def test_librdkafkas_own_errors_are_not_called_refusals() -> None:
    for code in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._PURGE_QUEUE):
        message = delivery_failure(KafkaError(code))
        assert message.startswith("the events were not delivered to a broker: "), message


def test_a_broker_error_is_a_refusal_naming_it() -> None:
    message = delivery_failure(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    assert message.startswith("the broker refused the events: ")
    assert "too large" in message.lower()
