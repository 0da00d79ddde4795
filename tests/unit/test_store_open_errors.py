"""Opening a Redis store: a refusal is told from an outage, and no error carries a password.

Found in review: the wait for a Redis that is down at start (``run``, ``serve``, each
serving worker) looked for the AuthenticationError one cause deep, where redis-py's cluster
client puts it two deep (StoreError <- RedisClusterException <- AuthenticationError), so a
wrong password on a Redis Cluster was waited out for ever; and each warning of that wait
printed the store's URL, password and all.
"""

from __future__ import annotations

import socket

import pytest
import redis

from usersignals.assembly import _refused_us
from usersignals.errors import StoreError
from usersignals.state.redis import RedisClusterStore, RedisStore


def refused_as_the_cluster_client_does() -> None:
    try:
        raise redis.exceptions.AuthenticationError("invalid username-password pair")
    except redis.exceptions.AuthenticationError as auth:
        cannot = "Redis Cluster cannot be connected"
        raise redis.exceptions.RedisClusterException(cannot) from auth


def test_a_refusal_two_causes_deep_is_a_refusal() -> None:
    with pytest.raises(redis.exceptions.RedisClusterException) as cluster:
        refused_as_the_cluster_client_does()
    error = StoreError("redis-cluster", "open", "refused")
    error.__cause__ = cluster.value
    assert _refused_us(error)
    assert not _refused_us(StoreError("redis", "open", "connection refused"))


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port  # nothing listens once the probe closes


@pytest.mark.parametrize("store", [RedisStore, RedisClusterStore])
def test_an_open_error_names_the_url_without_its_password(store: type) -> None:
    url = f"redis://admin:s3cret-pw@127.0.0.1:{closed_port()}/0"
    with pytest.raises(StoreError) as caught:
        store(url, timeout_s=0.5) if store is RedisStore else store(url)
    assert "s3cret-pw" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)
