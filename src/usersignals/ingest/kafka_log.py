"""Kafka as the API's accepted-write path (``usersignals serve --kafka``).

Each accepted event is produced to the events topic keyed by its user id, and the API answers
2xx only once the broker has acknowledged every event of the request (``acks=all``, an
idempotent producer). A deletion is a ``{"op": "delete", "user_id": ...}`` value on the same
key, so it lands in the user's partition behind every event accepted before it — by any API
worker — and the processor applies it in that order. A broker that does not acknowledge within
``kafka.produce_timeout_ms`` makes the request a 503 with ``Retry-After``.

A request that timed out may still have reached the topic (the acknowledgement, not the write,
was lost); a client that retries it sends the same ``event_id``s again.

An idempotent producer can fail for good: a broker restarted without its state no longer
knows the producer's id, and librdkafka raises a *fatal* error, after which that producer
never produces again; a broker that hung while a request was in flight may fence it, which
librdkafka reports in each message's delivery report instead (``PRODUCER_FENCED``). The
request that meets either is a 503 like any other broker failure, and a new producer
replaces the dead one, so the API recovers once the broker is back. A producer can also
stall without an error of its own: after a broker restarted without its state (the topic
gone with it), every message timed out in it for as long as it was tried, while a new
producer was acknowledged at once. So a producer that has delivered nothing for
:data:`STALLED_AFTER_S` (or twice the produce timeout, if longer) is replaced too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import msgspec
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from usersignals.config import KafkaSettings
from usersignals.errors import ConfigurationError, IngestUnavailableError
from usersignals.events.model import Event
from usersignals.ingest.accepted import LogStatus
from usersignals.ingest.kafka import librdkafka_settings
from usersignals.ingest.kafka_logging import client_logger
from usersignals.ingest.spool import encode_delete

logger = logging.getLogger(__name__)

_encode_event = msgspec.json.Encoder().encode
_RETRY_AFTER_S = 5
#: How long a producer may go without an acknowledgement before it is replaced: a real
#: outage is not shortened by it (a new producer waits for the broker as the old one did),
#: and replacing it no more often keeps an outage from churning producers.
STALLED_AFTER_S = 15.0


#: Delivery errors after which an idempotent producer never delivers again: the broker
#: fenced it, or no longer knows its id or sequence (librdkafka retries none of them).
_PRODUCER_DEAD = frozenset(
    {
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.UNKNOWN_PRODUCER_ID,
        KafkaError.INVALID_PRODUCER_ID_MAPPING,
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
        KafkaError._FENCED,
        KafkaError._FATAL,
    }
)


def delivery_failure(error: KafkaError) -> str:
    """What a failed delivery report says happened. librdkafka's own errors (negative codes:
    a message that timed out in the producer's queue, all brokers down, a queue purged when
    the producer was replaced) mean no broker took the events, which is not a broker
    refusing them; a broker's error code is its refusal."""
    if error.code() == KafkaError._MSG_TIMED_OUT:
        return f"no broker acknowledged the events within message.timeout.ms ({error.str()})"
    if error.code() < 0:
        return f"the events were not delivered to a broker: {error.str()}"
    return f"the broker refused the events: {error.str()}"


class _Pending:
    """The deliveries one request waits for."""

    def __init__(self, count: int) -> None:
        self.remaining = count
        self.errors: list[KafkaError] = []
        self.done = threading.Event()
        self._lock = threading.Lock()

    def delivered(self, error: KafkaError | None, message: Message) -> None:
        with self._lock:
            if error is not None:
                self.errors.append(error)
            self.remaining -= 1
            if self.remaining <= 0:
                self.done.set()


class KafkaLog:
    def __init__(self, settings: KafkaSettings) -> None:
        self.topic = settings.topic
        self.timeout_s = settings.produce_timeout_ms / 1000
        self._config = {
            "bootstrap.servers": settings.bootstrap_servers,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 2,
            # librdkafka gives up on a message after this: the request's 503.
            "message.timeout.ms": settings.produce_timeout_ms,
            "logger": client_logger(),
            **librdkafka_settings(settings.producer),
        }
        try:
            self._producer = Producer(self._config)
        except KafkaException as exc:  # an unknown or invalid property
            raise ConfigurationError(f"kafka.producer: {exc.args[0].str()}") from exc
        self._replacing = threading.Lock()
        self._failed_at = -1e9
        self._stalled_after_s = max(STALLED_AFTER_S, 2 * self.timeout_s)
        #: When the producer in use last delivered, or was made (monotonic).
        self._delivered_at = time.monotonic()

    def check(self) -> LogStatus:
        """Nothing to refuse ahead: the broker's acknowledgement is the check."""
        return self.status()

    def append_events(self, events: Sequence[Event]) -> None:
        self._produce([(event.user_id, _encode_event(event)) for event in events])

    def delete_user(self, user_id: str) -> None:
        self._produce([(user_id, encode_delete(user_id))])

    def _produce(self, records: list[tuple[str, bytes]]) -> None:
        pending = _Pending(len(records))
        deadline = time.monotonic() + self.timeout_s + 1.0
        producer = self._producer
        try:
            for key, value in records:
                producer.produce(
                    self.topic, key=key.encode(), value=value, on_delivery=pending.delivered
                )
            # Serve delivery callbacks (of any request) until ours are all in, or time is up.
            while not pending.done.is_set() and time.monotonic() < deadline:
                producer.poll(0.01)
        except (BufferError, KafkaException) as exc:
            # A fatal error comes from poll() (a delivery report's error is never marked so).
            if isinstance(exc, KafkaException) and exc.args[0].fatal():
                self._replace(producer)
            self._refuse(f"cannot queue the events for the broker: {exc}")
        if not pending.done.is_set():
            self._replace_if_stalled(producer)
            self._refuse(f"the broker did not acknowledge within {self.timeout_s:.1f} s")
        if pending.errors:
            if any(e.fatal() or e.code() in _PRODUCER_DEAD for e in pending.errors):
                self._replace(producer)
            else:
                self._replace_if_stalled(producer)
            self._refuse(delivery_failure(pending.errors[0]))
        self._failed_at = -1e9  # acknowledged: the broker is back, whatever failed before
        self._delivered_at = time.monotonic()

    def _replace_if_stalled(self, producer: Producer) -> None:
        """:meth:`_replace` ``producer`` if it has delivered nothing for the stall period."""
        if time.monotonic() - self._delivered_at >= self._stalled_after_s:
            self._replace(producer)

    def _replace(self, dead: Producer) -> None:
        """A new producer in place of ``dead`` (failed fatally, or fenced), unless another
        request has replaced it already. What ``dead`` still held is not delivered: those requests
        answer 503, and their clients retry."""
        with self._replacing:
            if self._producer is dead:
                logger.error("the Kafka producer can no longer deliver: starting a new one")
                self._producer = Producer(self._config)
                self._delivered_at = time.monotonic()

    def _refuse(self, message: str) -> None:
        self._failed_at = time.monotonic()
        logger.error("%s", message)
        raise IngestUnavailableError("broker_unavailable", message, _RETRY_AFTER_S)

    def status(self) -> LogStatus:
        if time.monotonic() - self._failed_at < _RETRY_AFTER_S:
            return LogStatus(False, "broker_unavailable")
        return LogStatus(True)

    def close(self) -> None:
        self._producer.flush(self.timeout_s)
