"""Bad events to the dead-letter topic: the raw value, the reason and where it came from.

Every dead letter of a batch is delivered before the batch's offsets are committed, or the
batch fails: a dead letter is never lost. A value the broker took on the events topic can
still be too large to go on as a dead letter (the reason's headers come on top of it, and
the producer's limit may be lower than the broker's): such a value goes on cut to its first
:data:`TRUNCATED_VALUE_BYTES`, with its full length in a ``value.length`` header. Refusing it
whole would stop the processor on that message at every restart. The reason's detail is
cut to :data:`DETAIL_HEADER_CHARS` always (its full length in ``detail.length``), so the
headers alone never go over.
"""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from usersignals.config import KafkaSettings
from usersignals.errors import BrokerError
from usersignals.events.model import BadEvent
from usersignals.ingest.kafka import broker_error, connection_settings
from usersignals.ingest.kafka_logging import client_logger

#: How much of a value too large to dead-letter whole is kept: enough to tell what it was.
TRUNCATED_VALUE_BYTES = 64 * 1024
#: How much of a reason's detail goes in its header, always: a detail is a sentence, but
#: ``signal_failed``'s is its author's exception text, which may hold a whole state.
DETAIL_HEADER_CHARS = 2_000
_FLUSH_S = 30

Headers = list[tuple[str, str | bytes | None]]


def _headers(event: BadEvent, cut_from: int | None) -> Headers:
    detail = event.detail[:DETAIL_HEADER_CHARS]
    headers: Headers = [("reason", event.reason.encode()), ("detail", detail.encode())]
    if len(detail) < len(event.detail):
        headers.append(("detail.length", str(len(event.detail)).encode()))
    if event.position is not None:
        topic, _, partition = event.position.partition.rpartition("/")
        headers += [
            ("source.topic", topic.encode()),
            ("source.partition", partition.encode()),
            ("source.offset", str(event.position.offset).encode()),
        ]
    if cut_from is not None:
        headers.append(("value.length", str(cut_from).encode()))
    return headers


def _too_large(error: KafkaError) -> bool:
    return error.code() == KafkaError.MSG_SIZE_TOO_LARGE


class DeadLetterTopic:
    """Bad events to a topic: the raw value, the reason, and where it came from in headers."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.topic = settings.dead_letter_topic
        # The consumer's TLS/SASL settings: without them, on a secured cluster, the first
        # bad event's flush would time out and stop the processor.
        self._producer = Producer(
            {
                **connection_settings(settings),
                "bootstrap.servers": settings.bootstrap_servers,
                "linger.ms": 20,
                "logger": client_logger(),
            }
        )

    def write(self, bad: list[BadEvent]) -> None:
        """Deliver every dead letter of a batch; :class:`BrokerError` if one cannot be."""
        failed: list[tuple[BadEvent, KafkaError]] = []
        for event in bad:
            self._send(event, failed)
        self._flush()
        # The broker's own limit is only known from the delivery report.
        again = [event for event, error in failed if _too_large(error)]
        lost = [error for _, error in failed if not _too_large(error)]
        if lost:
            raise broker_error("produce dead letter", lost[0])
        failed.clear()
        for event in again:
            self._send(event, failed, whole=False)
        self._flush()
        if failed:
            raise broker_error("produce dead letter", failed[0][1])

    def _send(
        self, event: BadEvent, failed: list[tuple[BadEvent, KafkaError]], whole: bool = True
    ) -> None:
        """Produce one dead letter; its delivery error, if any, is added to ``failed``."""
        value = event.raw if whole else event.raw[:TRUNCATED_VALUE_BYTES]
        headers = _headers(event, None if whole else len(event.raw))

        def delivered(error: KafkaError | None, _message: Message) -> None:
            if error is not None:
                failed.append((event, error))

        try:
            self._producer.produce(
                self.topic, key=event.key, value=value, headers=headers, on_delivery=delivered
            )
        except KafkaException as exc:
            if not (whole and _too_large(exc.args[0])):
                raise broker_error("produce dead letter", exc.args[0]) from exc
            self._send(event, failed, whole=False)  # over the producer's own limit

    def _flush(self) -> None:
        remaining = self._producer.flush(_FLUSH_S)
        if remaining:
            raise BrokerError(
                "produce dead letter",
                "_TIMED_OUT",
                f"{remaining} not delivered in {_FLUSH_S} s",
                True,
            )

    def close(self) -> None:
        self._producer.flush(_FLUSH_S)
