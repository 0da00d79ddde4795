"""The consumer-group timing of the processors the tests start.

librdkafka joins a group in about half its session timeout against the tests' broker, and a
member killed without leaving holds its partitions until the timeout ends: 6 s (the default
of a Kafka broker's `group.min.session.timeout.ms`, the least it allows) made a test that
kills a processor three times take 47 s, most of it waiting. The tests' broker (Tansu)
allows less, and the heartbeats come from librdkafka's own thread, not the processor's busy
one: 2 s with a heartbeat every 400 ms took that test to 21 s. A stall of the machine past
2 s would drop a running member and rebalance the group: slower, never wrong (the kill
tests count every event exactly once either way); it passed under load (the Kafka modules
beside the unit suite).
"""

from __future__ import annotations

QUICK_GROUP_ENV = {
    "USERSIGNALS_KAFKA__SESSION_TIMEOUT_MS": "2000",
    "USERSIGNALS_KAFKA__CONSUMER__HEARTBEAT_INTERVAL_MS": "400",
}
