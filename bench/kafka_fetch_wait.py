"""Produce -> consume latency of a bare consumer against the local broker, per fetch wait.

Method: a producer thread feeds a 6-partition topic at ``--rate`` messages/s (chunks every
50 ms, linger 5 ms), each message stamped with its produce time; a confluent-kafka consumer
assigned to the partitions' ends reads for ``--seconds`` (after 5 s of warm-up) and records
now - stamp for every 97th offset. Once per ``fetch.wait.max.ms`` value given, each run with
its own broker. It shows what the processor's ``FETCH_WAIT_MAX_MS`` default is for
(usersignals.ingest.kafka): a broker that holds each fetch to its limit adds up to it.

    .venv/bin/python bench/kafka_fetch_wait.py                       # 500 and 50 ms
    .venv/bin/python bench/kafka_fetch_wait.py --wait 500 --wait 20 --rate 10000
"""

from __future__ import annotations

import argparse
import threading
import time

from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

from usersignals.devtools.broker import LocalBroker
from usersignals.ingest.kafka import create_topic

TOPIC, PARTITIONS, WARM_UP_S, SAMPLE_EVERY = "latency", 6, 5.0, 97


def feed(bootstrap: str, rate: float, stop: threading.Event) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    sent, started = 0, time.monotonic()
    while not stop.is_set():
        for _ in range(max(int(rate) // 20, 1)):
            stamp = str(time.time_ns() // 1000).encode()
            producer.produce(TOPIC, key=str(sent % 1000).encode(), value=stamp)
            sent += 1
        producer.poll(0)
        delay = started + sent / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    producer.flush(5)


def latencies_us(rate: float, seconds: float, wait_ms: int) -> list[int]:
    with LocalBroker() as broker:
        create_topic(broker.bootstrap, TOPIC, PARTITIONS)
        stop = threading.Event()
        feeder = threading.Thread(target=feed, args=(broker.bootstrap, rate, stop))
        feeder.start()
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "latency",
                             "enable.auto.commit": False, "fetch.queue.backoff.ms": 10,
                             "fetch.wait.max.ms": wait_ms})  # fmt: skip
        consumer.assign([TopicPartition(TOPIC, p, OFFSET_END) for p in range(PARTITIONS)])
        found: list[int] = []
        started = time.monotonic()
        try:
            while time.monotonic() < started + WARM_UP_S + seconds:
                for message in consumer.consume(1000, 0.1):
                    value, offset = message.value(), message.offset()
                    if message.error() or value is None or offset is None:
                        continue
                    if offset % SAMPLE_EVERY == 0 and time.monotonic() > started + WARM_UP_S:
                        found.append(time.time_ns() // 1000 - int(value))
        finally:
            stop.set()
            feeder.join()
            consumer.close()
    return sorted(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=33_000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--wait", type=int, action="append", help="fetch.wait.max.ms values")
    args = parser.parse_args()
    print(f"bare consumer, {args.rate:,.0f} messages/s, {PARTITIONS} partitions, Tansu")
    for wait_ms in args.wait or [500, 50]:
        found = latencies_us(args.rate, args.seconds, wait_ms)
        p50, p99 = found[len(found) // 2] / 1000, found[int(len(found) * 0.99)] / 1000
        print(f"fetch.wait.max.ms {wait_ms:>4}: {len(found):,} samples, "
              f"produce -> consume p50 {p50:.0f} ms, p99 {p99:.0f} ms", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
