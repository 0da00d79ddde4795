"""Handing the backfill's offsets to the processor's consumer group.

After a backfill of an archive with Kafka coordinates, the processor could read the topic from
its start and drop, user by user, what the backfill covered. Committing the backfill's offsets
for the processor's group lets it start where the backfill stopped instead. Only a group with
no committed offsets yet is given them: a group that has been consuming owns its position, and
the per-user progress already reconciles it with the backfilled states.
"""

from __future__ import annotations

from collections.abc import Mapping

from confluent_kafka import Consumer, KafkaException, TopicPartition

from usersignals.config import KafkaSettings
from usersignals.errors import ConfigurationError, HandoverError
from usersignals.ingest.kafka import librdkafka_settings
from usersignals.ingest.kafka_logging import client_logger


def commit_backfill_offsets(kafka: KafkaSettings, offsets: Mapping[str, int]) -> bool:
    """Commit ``offsets`` (``topic/partition`` → next offset) for ``kafka.group_id`` if the group
    has none of its own for them; returns whether it did."""
    if not kafka.bootstrap_servers:
        raise ConfigurationError("committing offsets needs kafka.bootstrap_servers (--kafka)")
    wanted = []
    for name, offset in sorted(offsets.items()):
        topic, _, partition = name.rpartition("/")
        wanted.append(TopicPartition(topic, int(partition), offset))
    if not wanted:
        return False
    consumer = Consumer(
        {
            **librdkafka_settings(kafka.consumer),
            "bootstrap.servers": kafka.bootstrap_servers,
            "group.id": kafka.group_id,
            "enable.auto.commit": False,
            "logger": client_logger(),
        }
    )
    try:
        current = consumer.committed([TopicPartition(t.topic, t.partition) for t in wanted], 10)
        if any(position.offset >= 0 for position in current):
            return False
        consumer.commit(offsets=wanted, asynchronous=False)
        return True
    except KafkaException as exc:
        raise HandoverError(kafka.group_id, str(exc)) from exc
    finally:
        consumer.close()
