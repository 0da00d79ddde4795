"""Writing the reference workload into a Kafka topic (``usersignals produce``)."""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec
from confluent_kafka import Producer

from usersignals.ingest.kafka import create_topic
from usersignals.ingest.synthetic import WorkloadSpec, iter_event_chunks


def produce_workload(
    bootstrap: str,
    topic: str,
    spec: WorkloadSpec,
    rate: int = 0,
    partitions: int = 6,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Produce ``spec``'s events keyed by user id, at ``rate`` events/s (0: unthrottled)."""
    create_topic(bootstrap, topic, partitions)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "compression.type": "lz4"})
    encoder = msgspec.json.Encoder()
    sent = 0
    started = time.monotonic()
    chunk_size = max(min(rate // 10, 20_000), 1) if rate else 20_000
    for chunk in iter_event_chunks(spec, chunk_size=chunk_size):
        for event in chunk:
            while True:
                try:
                    producer.produce(
                        topic, key=str(event["user_id"]).encode(), value=encoder.encode(event)
                    )
                    break
                except BufferError:  # local queue full: let deliveries drain
                    producer.poll(0.05)
        producer.poll(0)
        sent += len(chunk)
        if progress is not None:
            progress(sent)
        if rate:
            delay = started + sent / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    producer.flush(60)
    return sent
