"""Fixtures shared by every tier: a real redis-server and a real Redis Cluster, on loopback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from redis_server import RedisServer
from usersignals.devtools.redis_cluster import LocalRedisCluster


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    server = RedisServer()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """A real Redis Cluster on loopback: 3 primaries, 3 replicas."""
    with LocalRedisCluster() as cluster:
        yield cluster.url
