"""Scale-out: events/s with 1 and 2 processors on one topic over Redis Cluster, against
RocksDB with 1 processor; serving p99 from two replicas reading the cluster.

Method, in one run on this 2-core machine (the broker, 6 Redis nodes, the processors and wrk
all share the 2 cores): produce N reference events (6 partitions) to a local Tansu broker;
then for each configuration start fresh ``usersignals run --kafka`` processes in a new
consumer group and poll the group's committed offsets (admin API): the rate is the events
committed between the first commit and the last, over that time (group joins excluded).
Finally two ``usersignals serve`` replicas read the cluster and wrk (8 connections each, both
at once) asks each for one user x the five reference signals.

    .venv/bin/python bench/scale.py --events 200000          # needs wrk
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import msgspec
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from usersignals.demo import workload_spec
from usersignals.devtools.broker import LocalBroker, free_port
from usersignals.devtools.redis_cluster import LocalRedisCluster
from usersignals.enrich.tables import load_table
from usersignals.ingest.kafka_produce import produce_workload
from usersignals.ingest.synthetic import item_records, iter_event_chunks
from usersignals.state.redis import RedisClusterStore
from usersignals.state.rocks import RocksStore

BIN = Path(sys.executable).parent
PARTITIONS = 6
TOPIC = "scale"
QUERY = (
    "names=recent_engagements,action_counts,category_interest,taste_embedding,"
    "distinct_creators&window=1d&actions=click,save,closeup&limit=50"
)


def committed(admin: AdminClient, group: str) -> int:
    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
    )
    result = admin.list_consumer_group_offsets([request])[group].result(timeout=10)
    return sum(max(p.offset, 0) for p in result.topic_partitions)


def run_processors(
    bootstrap: str, count: int, env_extra: dict[str, str], total: int, root: Path
) -> float:
    group = f"scale-{time.time_ns()}"
    env = {
        **os.environ,
        **env_extra,
        "USERSIGNALS_KAFKA__GROUP_ID": group,
        "USERSIGNALS_KAFKA__SESSION_TIMEOUT_MS": "6000",
    }
    processes = [
        subprocess.Popen(
            [
                str(BIN / "usersignals"),
                "run",
                "--kafka",
                bootstrap,
                "--topic",
                TOPIC,
                "--store",
                str(root / f"store-{group}-{i}"),
            ],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        for i in range(count)
    ]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    first_time, first_done = 0.0, 0
    try:
        while True:
            done = committed(admin, group)
            now = time.monotonic()
            if done and not first_time:
                first_time, first_done = now, done
            if done >= total:
                return (done - first_done) / (now - first_time)
            if any(p.poll() is not None for p in processes):
                raise RuntimeError("a processor exited early")
            time.sleep(0.2)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=60)


def serving_p99(cluster_url: str, users: list[str], root: Path) -> list[tuple[float, float]]:
    env = {
        **os.environ,
        "USERSIGNALS_STORE__BACKEND": "redis-cluster",
        "USERSIGNALS_STORE__REDIS_URL": cluster_url,
        "USERSIGNALS_STORE__REDIS_NAMESPACE": "scale2",
        "USERSIGNALS_SPOOL__PATH": str(root / "spool"),
    }
    servers, urls = [], []
    for _ in range(2):
        port = free_port()
        servers.append(
            subprocess.Popen(
                [str(BIN / "usersignals"), "serve", "--port", str(port)],
                env=env,
                stderr=subprocess.DEVNULL,
            )
        )
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for url in urls:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
        script = root / "users.lua"
        listing = ",".join(f'"{u}"' for u in users)
        script.write_text(
            f"local users = {{{listing}}}\nlocal i = 0\nrequest = function()\n"
            "  i = i % #users + 1\n"
            f'  return wrk.format("GET", "/v1/users/" .. users[i] .. "/signals?{QUERY}")\nend\n'
        )
        outputs: list[str] = ["", ""]

        def load(index: int) -> None:
            command = ["wrk", "-t1", "-c8", "-d10s", "--latency", "-s", str(script), urls[index]]
            outputs[index] = subprocess.run(command, capture_output=True, text=True).stdout

        threads = [threading.Thread(target=load, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        figures = []
        for out in outputs:
            rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
            value, unit = re.search(r"99%\s+([\d.]+)(\w+)", out).groups()  # type: ignore[union-attr]
            figures.append((rps, float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]))
        return figures
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/scale.py needs wrk: apt-get install -y wrk")
    root = Path(tempfile.mkdtemp(prefix="usersignals-scale-"))
    spec = workload_spec(args.events, seed=7)
    records = [e for chunk in iter_event_chunks(spec) for e in chunk]
    items = root / "items.jsonl"
    ids = sorted({str(e["item_id"]) for e in records})
    items.write_bytes(msgspec.json.Encoder().encode_lines(list(item_records(spec, ids))))
    users = sorted({str(e["user_id"]) for e in records})[:1000]
    with LocalBroker() as broker, LocalRedisCluster() as cluster:
        produce_workload(broker.bootstrap, TOPIC, spec, partitions=PARTITIONS)
        print(f"{args.events:,} reference events, {PARTITIONS} partitions; Redis Cluster 3+3")
        results: dict[str, float] = {}
        # RocksDB, one processor (its store prepared with the item table).
        rocks = RocksStore(root / "rocks")
        load_table(rocks.table("items"), items, key="item_id")
        rocks.close()
        results["rocksdb, 1 processor"] = run_processors(
            broker.bootstrap,
            1,
            {"USERSIGNALS_STORE__PATH": str(root / "rocks")},
            args.events,
            root,
        )
        print(f"rocksdb, 1 processor: {results['rocksdb, 1 processor']:,.0f} events/s", flush=True)
        for count, namespace in ((1, "scale1"), (2, "scale2")):
            store = RedisClusterStore(cluster.url, namespace=namespace)
            load_table(store.table("items"), items, key="item_id")
            store.close()
            env = {
                "USERSIGNALS_STORE__BACKEND": "redis-cluster",
                "USERSIGNALS_STORE__REDIS_URL": cluster.url,
                "USERSIGNALS_STORE__REDIS_NAMESPACE": namespace,
            }
            name = f"redis cluster, {count} processor{'s' if count > 1 else ''}"
            results[name] = run_processors(broker.bootstrap, count, env, args.events, root)
            print(f"{name}: {results[name]:,.0f} events/s", flush=True)
        replicas = serving_p99(cluster.url, users, root)
    one, two = results["redis cluster, 1 processor"], results["redis cluster, 2 processors"]
    print(f"\n2 processors / 1 processor on Redis Cluster: {two / one:.2f}x (target >= 1.6x)")
    for index, (rps, p99) in enumerate(replicas, 1):
        print(
            f"serving replica {index} (cluster, 8 connections): {rps:,.0f} req/s, p99 {p99:.2f} ms"
        )
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
