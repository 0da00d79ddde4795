"""Scale-out: processors sharing a Redis Cluster survive a processor crash and a primary
failover mid-stream; serving replicas read the cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import msgspec
import redis
from test_kafka import (
    CleanReplay,
    committed_total,
    metric,
    produce,
    reference_values,
    start_processor,
    stop,
    stop_leftover_processors,  # noqa: F401 (an autouse fixture: stops what a failure leaves)
    wait_caught_up,
)

from usersignals.devtools.broker import LocalBroker, free_port
from usersignals.devtools.redis_cluster import LocalRedisCluster
from usersignals.enrich.tables import load_table
from usersignals.state.redis import RedisClusterStore
from waiting import wait_for

BIN = Path(sys.executable).parent


def test_processor_crash_and_primary_failover_mid_stream_equal_one_clean_replay(
    broker: LocalBroker, tmp_path: Path
) -> None:
    topic = "fault"
    values, items = reference_values(120_000, seed=23)
    ends = produce(broker.bootstrap, topic, values)
    # The reference runs beside the faults (a group and a store of its own), not before them.
    clean = CleanReplay(broker, topic, "g-clean-f", tmp_path / "clean", items)

    with LocalRedisCluster() as cluster:
        store = RedisClusterStore(cluster.url, namespace="fault")
        jsonl = tmp_path / "items.jsonl"
        jsonl.write_bytes(msgspec.json.Encoder().encode_lines(items))
        load_table(store.table("items"), jsonl, key="item_id")
        env = {
            "USERSIGNALS_STORE__BACKEND": "redis-cluster",
            "USERSIGNALS_STORE__REDIS_URL": cluster.url,
            "USERSIGNALS_STORE__REDIS_NAMESPACE": "fault",
            "USERSIGNALS_KAFKA__BATCH_MAX_EVENTS": "2000",
        }

        def processor(name: str, metrics_port: int = 0) -> subprocess.Popen[str]:
            return start_processor(
                broker.bootstrap, topic, "g-fault", tmp_path / name,
                "--metrics-port", str(metrics_port), env_extra=env,
            )  # fmt: skip

        ports = free_port(), free_port()
        first, second = processor("a", ports[0]), processor("b", ports[1])
        for port, process in zip(ports, (first, second), strict=True):  # both joined
            wait_for(
                lambda port=port: metric(port, "usersignals_events_processed_total") > 0,
                120,
                "both processors to apply events",
                poll_s=0.1,
                alive=process,
            )
        killed_at = committed_total(broker.bootstrap, "g-fault", topic)
        first.kill()  # SIGKILL one processor
        first.communicate(timeout=30)
        assert killed_at < sum(ends.values()), "the kill came after the end, not mid-stream"
        victim = cluster.primaries()[0]
        cluster.kill(victim)  # a primary dies; its replica takes over
        wait_for(lambda: taken_over(cluster), 60, "a replica to take over", poll_s=0.1)
        cluster.restart(victim)  # it comes back as a replica of the new primary
        if second.poll() is not None:  # it may have failed loudly during the failover
            second.communicate(timeout=30)
            second = processor("c")
        wait_caught_up(broker.bootstrap, "g-fault", topic, ends, timeout_s=300)
        code, err = stop(second)
        assert code == 0, err
        expected = clean.records(ends)
        got = dict(store.scan(b"u:"))
        store.close()
    assert got.keys() == expected.keys()
    different = [key for key in expected if got[key] != expected[key]]
    assert different == [], f"{len(different)} users differ, e.g. {different[:3]}"


def taken_over(cluster: LocalRedisCluster) -> bool:
    """The cluster has all its primaries again, and says its state is ok."""
    primaries = cluster.primaries()
    if len(primaries) != 3:
        return False
    info = redis.Redis(port=primaries[0]).cluster("info")  # parsed into a dict by redis-py
    return bool(info.get("cluster_state") == "ok")


def test_two_stateless_serving_replicas_read_the_cluster(
    redis_cluster_url: str, tmp_path: Path
) -> None:
    from usersignals import Event, MicroBatch, Position, SignalRegistry
    from usersignals.processing import Engine

    store = RedisClusterStore(redis_cluster_url, namespace="replicas")
    module = tmp_path / "signals.py"
    module.write_text(
        "from usersignals import Count, Signal\n"
        "clicks = Signal(name='clicks', version=1, aggregate=Count())\n"
    )
    now = time.time_ns() // 1_000_000
    Engine(SignalRegistry.from_module(str(module)), store).process(
        MicroBatch(
            [Event(f"e{i}", f"u{i % 3}", "i", "click", "home", now) for i in range(30)],
            [Position("p", i) for i in range(30)],
        )
    )
    store.close()
    env = {
        **os.environ,
        "USERSIGNALS_STORE__BACKEND": "redis-cluster",
        "USERSIGNALS_STORE__REDIS_URL": redis_cluster_url,
        "USERSIGNALS_STORE__REDIS_NAMESPACE": "replicas",
        "USERSIGNALS_SIGNALS": str(module),
        "USERSIGNALS_SPOOL__PATH": str(tmp_path / "spool"),
    }
    replicas = []
    try:
        for _ in range(2):
            port = free_port()
            server = subprocess.Popen(
                [str(BIN / "usersignals"), "serve", "--port", str(port)], env=env, cwd=tmp_path
            )
            replicas.append((f"http://127.0.0.1:{port}", server))
        for url, server in replicas:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert server.poll() is None
                assert time.monotonic() < deadline
                time.sleep(0.1)
        answers = [httpx.get(f"{url}/v1/users/u0/signals", timeout=5).json() for url, _ in replicas]
        for answer in answers:  # any replica answers, the same
            assert answer["signals"]["clicks"]["value"] == {"total": 10, "by": {"click": 10}}
    finally:
        for _, server in replicas:
            server.terminate()
            server.wait(timeout=15)
