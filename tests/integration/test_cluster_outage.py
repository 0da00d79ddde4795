"""A whole Redis Cluster shard out mid-stream: the processor waits it out, loses or doubles
nothing.

The real ``usersignals run --kafka`` processor writes to a local Redis Cluster (append-only,
fsync always) while one shard — a primary and its replica — is SIGKILLed and restarted ~10 s
later (``kill``), or SIGSTOPped and resumed (``pause``: a hung shard, connections open). The
processor must stay up, answer 503 on ``/readyz`` during the outage, and end with exactly the
state of one clean replay.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path

import httpx
import msgspec
import pytest
import redis
from accepted_helpers import status
from redis.crc import key_slot
from test_kafka import (
    CleanReplay,
    committed_total,
    failed_store_operations,
    produce,
    start_processor,
    stop,
    stop_leftover_processors,  # noqa: F401 (an autouse fixture: stops what a failure leaves)
    wait_caught_up,
)

from usersignals.demo import workload_spec
from usersignals.devtools.broker import LocalBroker, free_port
from usersignals.devtools.redis_cluster import LocalRedisCluster
from usersignals.enrich.tables import load_table
from usersignals.errors import StoreError
from usersignals.ingest.synthetic import item_records, iter_event_chunks
from usersignals.state.redis import RedisClusterStore
from waiting import wait_for

# Failed store operations the processor must ride out before the shard comes back (the
# retry's capped backoff makes that several seconds of outage).
FAILURES_TO_SURVIVE = 6
ITEMS = 50


def few_item_values(events: int, seed: int) -> tuple[list[tuple[bytes, bytes]], list[dict]]:
    """The reference workload over only ``ITEMS`` items, so that the processor's enrichment
    cache holds all of them before the outage. A lookup that misses during an outage is
    held by the enrichment source's own "hold" policy, which does not report not-ready
    (see docs/operations.md): this test is about the store writes and reads."""
    spec = replace(workload_spec(events, seed), items=ITEMS)
    encoder = msgspec.json.Encoder()
    rows = [row for chunk in iter_event_chunks(spec) for row in chunk]
    values = [(str(r["user_id"]).encode(), encoder.encode(r)) for r in rows]
    return values, list(item_records(spec, sorted({str(r["item_id"]) for r in rows})))


def items_fetched(port: int) -> float:
    """Items the processor has fetched from the store into its enrichment cache."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.TransportError:
        return 0.0
    for line in text.splitlines():
        if line.startswith('usersignals_lookup_keys_fetched_total{source="items"} '):
            return float(line.split()[1])
    return 0.0


@pytest.mark.parametrize("fault", ["kill", "pause"])
def test_kafka_processor_survives_a_cluster_shard_outage_with_nothing_lost_or_doubled(
    broker: LocalBroker, tmp_path: Path, fault: str
) -> None:
    topic = f"shard-{fault}"
    values, items = few_item_values(40_000, seed=37)
    ends = produce(broker.bootstrap, topic, values)
    # The reference runs beside the outage (a group and a store of its own), not before it.
    clean = CleanReplay(broker, topic, f"g-clean-{topic}", tmp_path / "clean", items)

    with LocalRedisCluster(persistent=True) as cluster:
        store = RedisClusterStore(cluster.url, namespace="shard")
        jsonl = tmp_path / "items.jsonl"
        jsonl.write_bytes(msgspec.json.Encoder().encode_lines(items))
        load_table(store.table("items"), jsonl, key="item_id")
        env = {
            "USERSIGNALS_STORE__BACKEND": "redis-cluster",
            "USERSIGNALS_STORE__REDIS_URL": cluster.url,
            "USERSIGNALS_STORE__REDIS_NAMESPACE": "shard",
            "USERSIGNALS_KAFKA__BATCH_MAX_EVENTS": "500",
        }
        port = free_port()
        readyz = f"http://127.0.0.1:{port}/readyz"
        process = start_processor(
            broker.bootstrap, topic, f"g-{topic}", tmp_path / "p",
            "--metrics-port", str(port), env_extra=env,
        )  # fmt: skip
        wait_for(
            lambda: committed_total(broker.bootstrap, f"g-{topic}", topic) > 2_000,
            120, "the processor to be mid-stream", poll_s=0.05, alive=process,
        )  # fmt: skip
        wait_for(
            lambda: items_fetched(port) == len(items), 120, "every item in the cache",
            alive=process,
        )  # fmt: skip
        assert committed_total(broker.bootstrap, f"g-{topic}", topic) < sum(ends.values())
        primary = cluster.primaries()[0]
        shard = [primary, *cluster.replicas_of(primary)]
        assert len(shard) == 2
        for node in shard:
            if fault == "kill":
                cluster.kill(node)
            else:
                cluster.pause(node)
        wait_for(lambda: status(readyz) == 503, 60, "/readyz to report the outage", alive=process)
        wait_for(
            lambda: failed_store_operations(port) >= FAILURES_TO_SURVIVE,
            120, "the processor to retry through several failed operations", alive=process,
        )  # fmt: skip
        assert process.poll() is None, "the processor exited during the outage"
        for node in shard:
            if fault == "kill":
                cluster.restart(node)
            else:
                cluster.resume(node)
        wait_for(lambda: status(readyz) == 200, 120, "/readyz to recover", alive=process)
        wait_caught_up(broker.bootstrap, f"g-{topic}", topic, ends, timeout_s=300)
        code, err = stop(process)
        assert code == 0, err
        got = dict(store.scan(b"u:"))
        store.close()
    expected = clean.records(ends)
    assert got.keys() == expected.keys()
    different = [key for key in expected if got[key] != expected[key]]
    assert different == [], f"{len(different)} users differ, e.g. {different[:3]}"


def test_a_cluster_that_does_not_cover_every_slot_gives_store_errors() -> None:
    """redis-py's RedisClusterException (not a RedisError) becomes a StoreError too, so a
    whole-cluster failure is retried and reported like any outage, not a crash."""
    with LocalRedisCluster(replicas_per_primary=0) as cluster:
        store = RedisClusterStore(cluster.url, namespace="slots", wait_replicas=0)
        try:
            store.write({b"u1": b"x"})
            slot = key_slot(b"slots:s:{u1}")
            for port in cluster.ports:  # unassign the slot everywhere: nobody serves it
                with redis.Redis(port=port) as node, contextlib.suppress(redis.ResponseError):
                    node.execute_command("CLUSTER", "DELSLOTS", slot)
            with pytest.raises(StoreError, match="not covered"):
                RedisClusterStore(cluster.url, namespace="slots", wait_replicas=0)
            with pytest.raises(StoreError, match="read failed"):
                store.get_many([b"u1"])
            with pytest.raises(StoreError, match="write failed"):
                store.write({b"u1": b"y"})
        finally:
            store.close()


def test_a_cluster_store_starts_while_any_of_its_listed_nodes_answers(
    redis_cluster_url: str,
) -> None:
    """Found by the operator's trial: with the one node ``store.redis_url`` named down (a
    primary failed over), every new processor or server failed to start, though the cluster
    was healthy. The setting now lists several nodes, and any one that answers will do."""
    down = f"redis://127.0.0.1:{free_port()}"
    store = RedisClusterStore(f"{down}, {redis_cluster_url}", namespace="seeds", wait_replicas=0)
    try:
        store.write({b"u1": b"x"})
        assert store.get_many([b"u1"]) == [b"x"]
    finally:
        store.close()
    with pytest.raises(StoreError, match=down):
        RedisClusterStore(down, namespace="seeds", wait_replicas=0)
