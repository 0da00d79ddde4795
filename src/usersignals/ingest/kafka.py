"""Kafka as an event source: a consumer group, micro-batches, commits after durable writes.

The topic is keyed by user id, so each user's events stay in one partition, in order. A
micro-batch closes at ``batch_max_events`` events or after ``batch_max_wait_ms``. Offsets are
never committed automatically: the processor commits a batch's offsets only after the state
write that includes the batch has returned (see :mod:`usersignals.processing.kafka_runner`).
Nothing here is specific to one broker: the same settings work against Apache Kafka.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from usersignals.config import KafkaSettings, LibrdkafkaValue
from usersignals.errors import BrokerError, ConfigurationError
from usersignals.events.decode import not_an_event
from usersignals.events.model import BadEvent, Position, partition_id
from usersignals.ingest.kafka_logging import client_logger

logger = logging.getLogger(__name__)

#: How often a consumer whose topic does not exist yet says it is waiting, in seconds.
_MISSING_TOPIC_EVERY_S = 60.0
#: How often a consumer whose topic does not exist yet asks the broker for it, in seconds.
_LOOK_FOR_TOPIC_EVERY_S = 2.0


@dataclass
class KafkaBatch:
    """Raw values of one micro-batch, their positions, and the offsets to commit after it."""

    lines: list[bytes] = field(default_factory=list)
    positions: list[Position] = field(default_factory=list)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    first_received: float = 0.0
    #: Messages that carry no event at all (an empty or null value): dead letters as they are.
    bad: list[BadEvent] = field(default_factory=list)
    #: The messages taken, as consumed: the keys of the lines that turn out bad are read
    #: from them (:meth:`keyed`), not from every message (a call each, on the hot path).
    consumed: list[list[Message]] = field(default_factory=list)

    def keyed(self, bad: list[BadEvent]) -> list[BadEvent]:
        """``bad`` (this batch's lines' dead letters), each with its message's key."""
        wanted = {_place(event.position) for event in bad if event.position is not None}
        if not wanted:
            return bad
        keys: dict[tuple[str, int], bytes | None] = {}
        for message in itertools.chain.from_iterable(self.consumed):
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            if topic is None or partition is None or offset is None:
                continue
            place = (partition_id(topic, partition), offset)
            if place in wanted:
                keys[place] = _key_of(message)
                if len(keys) == len(wanted):
                    break
        return [
            event
            if event.position is None
            else msgspec.structs.replace(event, key=keys.get(_place(event.position)))
            for event in bad
        ]


def _place(position: Position) -> tuple[str, int]:
    return position.partition, position.offset


def _key_of(message: Message) -> bytes | None:
    key = message.key()
    return key.encode() if isinstance(key, str) else key


def librdkafka_settings(consumer: Mapping[str, LibrdkafkaValue]) -> dict[str, str]:
    """``kafka.consumer`` as librdkafka property names: ``fetch_max_bytes`` → ``fetch.max.bytes``,
    and each value as the text librdkafka takes (``true``/``false`` for a boolean).

    Environment variable names cannot hold dots, so ``USERSIGNALS_KAFKA__CONSUMER__FETCH_MAX_BYTES``
    arrives as ``fetch_max_bytes``; librdkafka's names use dots and never underscores, so every
    underscore is a dot. Dotted names (from a TOML file) pass unchanged.
    """
    return {name.replace("_", "."): _property_text(value) for name, value in consumer.items()}


def _property_text(value: LibrdkafkaValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


#: How long a broker may hold a fetch that has no data yet (librdkafka's default: 500 ms).
#: Kafka answers as soon as there is data, so this only bounds idle fetches there; a broker
#: that holds every fetch to its limit (Tansu, the tests' broker) adds up to this much to
#: each event's freshness. Measured against it at 33,000 events/s (bench/kafka_fetch_wait.py,
#: a bare consumer): produce -> consume p50 142 ms, p99 262 ms at 500 ms; 11 ms, 63 ms at 50 ms.
FETCH_WAIT_MAX_MS = 50
#: How long :meth:`KafkaSource.positions` may spend asking the broker, for all partitions.
_ASK_WATERMARKS_S = 1.0
#: Messages asked of the consumer per call while a batch fills.
_CONSUME_CHUNK = 10_000


def consumer_config(settings: KafkaSettings) -> dict[str, object]:
    """The processor's librdkafka consumer settings; ``kafka.consumer`` overrides them."""
    return {
        "bootstrap.servers": settings.bootstrap_servers,
        "group.id": settings.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.session_timeout_ms,
        # librdkafka otherwise idles ~1 s whenever its local queue fills (measured).
        "fetch.queue.backoff.ms": 10,
        "fetch.wait.max.ms": FETCH_WAIT_MAX_MS,
        "partition.assignment.strategy": "cooperative-sticky",
        "logger": client_logger(),
        **librdkafka_settings(settings.consumer),
    }


def broker_error(operation: str, error: KafkaError) -> BrokerError:
    """librdkafka's error, in the package's error tree."""
    return BrokerError(operation, error.name(), error.str(), retriable=error.retriable())


class KafkaSource:
    """A consumer-group member reading micro-batches from one topic."""

    def __init__(
        self,
        settings: KafkaSettings,
        on_assign: Callable[[list[str]], None] | None = None,
        on_revoke: Callable[[list[str]], None] | None = None,
    ) -> None:
        if not settings.bootstrap_servers:
            raise ConfigurationError("kafka.bootstrap_servers is not set")
        self.settings = settings
        try:
            self._consumer = Consumer(consumer_config(settings))
        except KafkaException as exc:  # an unknown or invalid property
            raise ConfigurationError(f"kafka.consumer: {exc.args[0].str()}") from exc
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        #: "topic/partition" per (topic, partition): the positions' partition ids, made once.
        self._partition_ids: dict[tuple[str, int], str] = {}
        self._missing_said_at = -_MISSING_TOPIC_EVERY_S
        #: The topic does not exist (yet): nothing can be consumed (``/readyz`` says so).
        self.awaiting_topic = False
        self._looked_at = -_LOOK_FOR_TOPIC_EVERY_S
        self._assigned_partitions = 0
        #: Per partition held, its committed offset (negative: none), asked once while
        #: librdkafka knows no position for it (see :meth:`positions`).
        self._committed: dict[tuple[str, int], int] = {}
        self._consumer.subscribe(
            [settings.topic], on_assign=self._assigned, on_revoke=self._revoked,
            on_lost=self._revoked,
        )  # fmt: skip

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        names = [partition_id(p.topic, p.partition) for p in partitions]
        logger.info("assigned %s", names)
        self._assigned_partitions += len(partitions)
        self._committed.clear()  # a group's commits may have moved while others held them
        if self._on_assign is not None:
            self._on_assign(names)

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        names = [partition_id(p.topic, p.partition) for p in partitions]
        logger.info("revoked %s", names)
        self._assigned_partitions = max(self._assigned_partitions - len(partitions), 0)
        self._committed.clear()
        if self._on_revoke is not None:
            self._on_revoke(names)

    def next_batch(self) -> KafkaBatch:
        """Up to ``batch_max_events`` events, waiting at most ``batch_max_wait_ms`` for new
        ones. Past the wait, the batch still takes what the consumer has fetched already,
        for as long as each take comes back full: a processor behind the stream catches up
        in batches of ``batch_max_events``. Closed at the wait, a batch behind held what one
        thread could take in that time, sharing the GIL with the engine (about 14,000
        events at 100 ms), however far behind it was. Every message counts towards the
        bound, dead letters too."""
        settings = self.settings
        if self.awaiting_topic or not self._assigned_partitions:
            self._look_for_topic()
        batch = KafkaBatch()
        deadline = time.monotonic() + settings.batch_max_wait_ms / 1000
        taken = 0  # messages, events or not: a backlog of blank values is bounded too
        while taken < settings.batch_max_events:
            remaining = max(deadline - time.monotonic(), 0.0)
            wanted = min(settings.batch_max_events - taken, _CONSUME_CHUNK)
            try:
                messages = self._consumer.consume(wanted, remaining)
            except KafkaException as exc:
                raise broker_error("consume", exc.args[0]) from exc
            if messages and not batch.first_received:
                batch.first_received = time.time()
            self._take(batch, messages)
            taken += len(messages)
            if not remaining and len(messages) < wanted:
                break  # past the wait, and what was fetched is all taken
        return batch

    def _take(self, batch: KafkaBatch, messages: list[Message]) -> None:
        """``messages`` into ``batch``: events as lines, blank and null values as dead
        letters, a partition's end skipped, any other error raised. One loop, a partition id
        string made once per partition (kept), and no copy of a value to check it for
        blanks: a topic of 300,000 reference events read by ``next_batch`` alone went from
        690,000-740,000 events/s (a call per message, an id and a stripped copy each) to
        970,000-997,000 (1.4 -> 1.0 µs an event). The processor's rate does not move with
        it (its engine thread sets the pace); the CPU beside the engine is what it saves."""
        ids = self._partition_ids
        lines, positions, next_offsets = batch.lines, batch.positions, batch.next_offsets
        batch.consumed.append(messages)
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    self._topic_missing(error)
                    continue
                raise broker_error("consume", error)
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            if topic is None or partition is None or offset is None:
                continue  # librdkafka sets all three on every message without an error
            key = (topic, partition)
            name = ids.get(key)
            if name is None:
                name = ids[key] = partition_id(topic, partition)
            position = Position(name, offset)
            next_offsets[key] = offset + 1
            value = message.value()
            if not value or value.isspace():
                # Not an event, but not to be skipped silently either: the producer has a bug.
                bad = not_an_event(value, position)
                batch.bad.append(msgspec.structs.replace(bad, key=_key_of(message)))
                continue
            lines.append(value)
            positions.append(position)

    def _topic_missing(self, error: KafkaError) -> None:
        """The subscribed topic does not exist (yet): consuming starts once it is created
        (by an admin, or by the API's first produce on a broker that creates topics). Said
        once a minute, not once a poll."""
        self.awaiting_topic = True
        now = time.monotonic()
        if now - self._missing_said_at >= _MISSING_TOPIC_EVERY_S:
            self._missing_said_at = now
            logger.warning(
                "waiting for the topic %r to exist: %s", self.settings.topic, error.str()
            )

    def _look_for_topic(self) -> None:
        """While no partition is assigned, ask for the topic's metadata every few seconds:
        whether it exists is what ``awaiting_topic`` says (librdkafka reports a missing
        topic once, and not always before a probe asks), and librdkafka itself would look
        again only at its periodic refresh (5 minutes), where the answer that shows the
        topic is what makes the group assign its partitions."""
        now = time.monotonic()
        if now - self._looked_at < _LOOK_FOR_TOPIC_EVERY_S:
            return
        self._looked_at = now
        try:
            metadata = self._consumer.list_topics(self.settings.topic, timeout=1.0)
        except KafkaException:
            return  # the broker is away: the next batch asks again
        topic = metadata.topics.get(self.settings.topic)
        found = topic is not None and topic.error is None and bool(topic.partitions)
        if topic is not None and topic.error is not None:
            if topic.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                self._topic_missing(topic.error)
        elif found:
            self.awaiting_topic = False

    def commit(self, next_offsets: dict[tuple[str, int], int]) -> None:
        """Commit synchronously; partitions no longer ours are skipped by the broker."""
        if not next_offsets:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in next_offsets.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # After a rebalance the new owner re-reads from the last commit; per-user progress
            # in the store makes that re-read change nothing. Not worth stopping for.
            logger.warning("offset commit failed (rebalance?): %s", exc)

    def positions(self, ask: bool = False) -> dict[str, tuple[int, int]]:
        """Per assigned partition: (next offset to consume, high watermark). Before anything
        is consumed from a partition, the next offset is the group's committed one.

        The watermark comes from the fetch responses (no extra request); some brokers report it
        a little low, so the lag computed from it is a lower bound and the position is
        exported too. ``ask``: also ask the broker (a request per partition, a short wait),
        for while nothing is consumed: the background fetches that keep the cached figure
        current then stop for some partitions (seen with Tansu during a store outage).
        """
        out: dict[str, tuple[int, int]] = {}
        assignment = self._consumer.assignment()
        # Asking stops at a deadline for all the partitions: the fetch thread waits here.
        deadline = time.monotonic() + _ASK_WATERMARKS_S
        held = self._consumer.position(assignment) if assignment else []
        unknown = [p for p in held if p.offset < 0]
        if unknown:
            self._ask_committed(unknown)
        for p in held:
            if p.offset < 0:
                p.offset = self._committed.get((p.topic, p.partition), p.offset)
            _, high = self._consumer.get_watermark_offsets(p, cached=True)
            left = deadline - time.monotonic()
            if ask and left > 0:
                with contextlib.suppress(KafkaException):  # the cached figure will do
                    _, asked = self._consumer.get_watermark_offsets(p, timeout=min(left, 0.2))
                    high = max(high, asked)
            out[partition_id(p.topic, p.partition)] = (p.offset, high)
        return out

    def _ask_committed(self, partitions: list[TopicPartition]) -> None:
        """Remember the committed offsets of ``partitions`` not asked for yet: librdkafka
        knows a partition's position only once it consumed from it, so a processor restarted
        on a caught-up topic exported no position or lag for it until a new message came."""
        ask = [p for p in partitions if (p.topic, p.partition) not in self._committed]
        if not ask:
            return
        try:
            found = self._consumer.committed(ask, timeout=_ASK_WATERMARKS_S)
        except KafkaException:
            return  # asked again at the next observation
        for p in found:
            self._committed[(p.topic, p.partition)] = p.offset if p.error is None else -1

    def close(self) -> None:
        self._consumer.close()


#: The librdkafka properties that say how to reach and authenticate to the brokers.
_CONNECTION_PREFIXES = ("security.", "sasl.", "ssl.", "socket.", "broker.", "client.")


def connection_settings(settings: KafkaSettings) -> dict[str, str]:
    """The consumer's settings that the processor's other clients (the broker probe, the
    dead-letter producer) need too: how to reach and authenticate to the brokers (TLS,
    SASL). Its fetch and group settings are not theirs."""
    return {
        name: value
        for name, value in librdkafka_settings(settings.consumer).items()
        if name.startswith(_CONNECTION_PREFIXES)
    }


class BrokerProbe:
    """Whether a broker answers, for the processor's ``/readyz``: a metadata request for the
    topic on a client of its own. (Asked on the consumer's handle from the health thread,
    the request waited behind the fetch thread's polls, past the probe's timeout.) Its own
    connection errors are not logged: the consumer logs them already."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._topic = settings.topic
        # Without the connection settings a secured cluster never answers the probe.
        connection = connection_settings(settings)
        self._admin = AdminClient(
            {**connection, "bootstrap.servers": settings.bootstrap_servers, "log_level": 0}
        )

    def reachable(self, timeout_s: float = 1.0) -> bool:
        try:
            self._admin.list_topics(self._topic, timeout=timeout_s)
        except KafkaException:
            return False
        return True


def create_topic(
    bootstrap: str,
    name: str,
    partitions: int,
    retention_ms: int = 7 * 86_400_000,
    wait_s: float = 10.0,
) -> None:
    """Create a topic (no-op if it exists), waiting ``wait_s`` for the broker's answer.
    ``retention.ms`` is set explicitly: some brokers report no default, and clients that
    read it (Quix Streams) then fail."""
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": client_logger()}
    admin = AdminClient(config)
    topic = NewTopic(
        name,
        num_partitions=partitions,
        replication_factor=1,
        config={"retention.ms": str(retention_ms), "retention.bytes": "-1"},
    )
    for future in admin.create_topics([topic]).values():
        try:
            future.result(timeout=wait_s)
        except TimeoutError as exc:  # it has no text of its own
            raise ConfigurationError(
                f"cannot create topic {name!r}: no broker at {bootstrap} answered within "
                f"{wait_s:g} s"
            ) from exc
        except Exception as exc:  # already exists is fine; anything else is not
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise ConfigurationError(f"cannot create topic {name!r}: {exc}") from exc
