"""A real Redis Cluster on 127.0.0.1 (3 primaries, 3 replicas) for tests and benchmarks.

Debian's redis-server in cluster mode, one process per node, each in its own directory;
``redis-cli --cluster create`` assigns the slots and the replicas.

    python -m usersignals.devtools.redis_cluster        # until Ctrl-C
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from usersignals.errors import ConfigurationError


def _free_node_port() -> int:
    """A port whose cluster-bus companion (port + 10000) is also free and valid."""
    for _ in range(200):
        port = random.randint(20_000, 40_000)
        if _is_free(port) and _is_free(port + 10_000):
            return port
    raise ConfigurationError("no free port pair for a Redis Cluster node")


def _replication(port: int) -> dict[str, Any]:
    """A node's ``INFO replication``, on a connection closed right after."""
    with redis.Redis(port=port) as node:
        info: dict[str, Any] = node.info("replication")
    return info


def _is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class LocalRedisCluster:
    def __init__(
        self, primaries: int = 3, replicas_per_primary: int = 1, persistent: bool = False
    ) -> None:
        # persistent: an append-only file fsynced on every write, so a node killed and
        # restarted keeps every acknowledged write (a whole-shard outage test needs it).
        self.persistent = persistent
        self.size = primaries * (1 + replicas_per_primary)
        self._binary = ""
        self.replicas_per_primary = replicas_per_primary
        self.ports = [_free_node_port() for _ in range(self.size)]
        self._root = Path(tempfile.mkdtemp(prefix="usersignals-cluster-"))
        self._processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}"

    def start(self, timeout_s: float = 30.0) -> LocalRedisCluster:
        """Launch the nodes and form the cluster; on any failure, the nodes launched are
        stopped before the error goes on (``__exit__`` does not run for a failed start)."""
        binary = shutil.which("redis-server")
        cli = shutil.which("redis-cli")
        if binary is None or cli is None:
            raise ConfigurationError("a local Redis Cluster needs redis-server and redis-cli")
        self._binary = binary
        try:
            return self._form(cli, timeout_s)
        except BaseException:
            self.stop()
            raise

    def _form(self, cli: str, timeout_s: float) -> LocalRedisCluster:
        for port in self.ports:
            (self._root / str(port)).mkdir()
            self._launch(port)
        for port in self.ports:
            self._wait_ping(port, timeout_s)
        subprocess.run(
            [cli, "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
             "--cluster-replicas", str(self.replicas_per_primary), "--cluster-yes"],
            check=True, capture_output=True, timeout=timeout_s,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with redis.Redis(port=self.ports[0], decode_responses=True) as node:
                info = node.cluster("info")
            if isinstance(info, dict) and info.get("cluster_state") == "ok" and self._replicated():
                return self
            time.sleep(0.1)
        raise ConfigurationError("the Redis Cluster did not reach cluster_state:ok")

    def _launch(self, port: int) -> None:
        durability = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else [
            "--appendonly", "no"]  # fmt: skip
        self._processes[port] = subprocess.Popen(
            [self._binary, "--bind", "127.0.0.1", "--port", str(port), "--cluster-enabled", "yes",
             "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
             "--save", "", *durability, "--dir", str(self._root / str(port))],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def primaries(self) -> list[int]:
        return [
            port
            for port in self.ports
            if self._processes[port].poll() is None and _replication(port).get("role") == "master"
        ]

    def replicas_of(self, primary: int) -> list[int]:
        """The ports of the replicas of one primary: with it, one shard."""
        with redis.Redis(port=primary) as node:
            info = node.info("replication")
        count = int(info.get("connected_slaves", 0))
        return [int(info[f"slave{i}"]["port"]) for i in range(count)]

    def pause(self, port: int) -> None:
        """SIGSTOP one node: a hung node, its connections open and nothing answering."""
        self._processes[port].send_signal(signal.SIGSTOP)

    def resume(self, port: int) -> None:
        self._processes[port].send_signal(signal.SIGCONT)

    def restart(self, port: int) -> None:
        """Start a killed node again: it rejoins the cluster (as a replica after a failover)."""
        self._launch(port)
        self._wait_ping(port, 30)

    def _replicated(self) -> bool:
        """Every primary has its replicas connected (else a WAIT right away would fail)."""
        primaries = 0
        for port in self.ports:
            info = _replication(port)
            if info.get("role") == "master":
                primaries += 1
                if int(info.get("connected_slaves", 0)) < self.replicas_per_primary:
                    return False
            elif info.get("master_link_status") != "up":
                return False
        return primaries == self.size // (1 + self.replicas_per_primary)

    def _wait_ping(self, port: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with redis.Redis(port=port) as node:
                    node.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise ConfigurationError(f"redis node {port} did not start") from None
                time.sleep(0.02)

    def kill(self, port: int) -> None:
        """SIGKILL one node (a failover test's fault)."""
        process = self._processes.get(port)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def stop(self) -> None:
        for process in self._processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)  # a paused node cannot act on SIGTERM
                process.terminate()
        for process in self._processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes.clear()
        shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> LocalRedisCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Run a local Redis Cluster (3 primaries, a replica each) for development."
    )
    parser.parse_args()  # no options: --help says what it does, anything else is refused
    stops = {signal.SIGINT, signal.SIGTERM}
    with LocalRedisCluster() as cluster:
        # Blocked, so that sigwait takes them: unblocked, SIGTERM's default action killed
        # this process on the spot and left the nodes running. Only now: the nodes inherit
        # the mask of the moment they start, and keep the default one.
        signal.pthread_sigmask(signal.SIG_BLOCK, stops)
        print(
            f"Redis Cluster on {', '.join(map(str, cluster.ports))}: "
            f"USERSIGNALS_STORE__BACKEND=redis-cluster USERSIGNALS_STORE__REDIS_URL={cluster.url}"
            "; stop with Ctrl-C",
            flush=True,
        )
        signal.sigwait(stops)


if __name__ == "__main__":
    main()
