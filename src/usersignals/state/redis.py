"""Redis as the state store: shared by many processors and serving replicas.

One user's record is one Redis string, so a user's states and progress change together (one
``SET``); a micro-batch is written in one ``MULTI``/``EXEC`` pipeline and read with ``MGET``.
Connection errors and timeouts are retried with backoff by the client, then raised as
:class:`~usersignals.errors.StoreError`. Keys: ``<namespace>:s:<key>`` for user records and
metadata, ``<namespace>:t:<table>:<key>`` for enrichment tables.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, cast
from urllib.parse import urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from usersignals.config import redis_nodes
from usersignals.errors import StoreError
from usersignals.state import store as state_store
from usersignals.state.keys import METADATA_LOCK_KEY

logger = logging.getLogger(__name__)

_BACKEND = "redis"
_BACKEND_CLUSTER = "redis-cluster"
# redis-py raises RedisClusterException (and SlotNotCoveredError, one of them) for some
# whole-cluster failures; they are not RedisErrors, and must become StoreErrors all the same.
_CLUSTER_ERRORS = (redis.RedisError, redis.exceptions.RedisClusterException)
_CHUNK = 5_000
_GLOB_SPECIAL = b"*?[]\\"
#: How often a command waiting for the metadata lock asks again (redis-py polls; 0.1 s by
#: default).
_METADATA_LOCK_POLL_S = 0.02


def shown_url(url: str) -> str:
    """``url`` as an error may show it: the password masked (errors reach logs, and a store
    that is down is retried with a warning per try)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:" if parts.username else ":"
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}***@{host}").geturl()


@contextlib.contextmanager
def _hold_metadata_lock(client: Any, name: bytes, backend: str) -> Iterator[None]:
    """The store's metadata lock (``StateStore.metadata_lock``): redis-py's lock, a key set
    only when absent, with an expiry, and released only by its holder (a script)."""
    lock = client.lock(
        name,
        timeout=state_store.METADATA_LOCK_EXPIRY_S,
        sleep=_METADATA_LOCK_POLL_S,
        blocking_timeout=state_store.METADATA_LOCK_WAIT_S,
    )
    try:
        acquired = lock.acquire()
    except _CLUSTER_ERRORS as exc:
        raise StoreError(backend, "lock", str(exc)) from exc
    if not acquired:
        raise state_store.lock_wait_failed(backend, name.decode())
    try:
        yield
    finally:
        try:
            lock.release()
        except _CLUSTER_ERRORS as exc:
            # Written already: the lock expired while held (or cannot be reached), and
            # another command may have started meanwhile. Said, not raised.
            logger.warning("the store's metadata lock was not released: %s", exc)


def _escape_glob(prefix: bytes) -> bytes:
    return b"".join(b"\\" + bytes([c]) if c in _GLOB_SPECIAL else bytes([c]) for c in prefix)


class _RedisTable:
    def __init__(self, client: Any, prefix: bytes) -> None:
        # Any: a redis.Redis here, a redis.cluster.RedisCluster in the cluster subclass.
        self._client: Any = client
        self._prefix = prefix

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        prefix = self._prefix
        out: list[bytes | None] = []
        try:
            for start in range(0, len(keys), _CHUNK):
                chunk = [prefix + key for key in keys[start : start + _CHUNK]]
                out.extend(cast(list[bytes | None], self._client.mget(chunk)))
        except redis.RedisError as exc:
            raise StoreError(_BACKEND, "read", str(exc)) from exc
        return out

    def write(self, puts: Mapping[bytes, bytes], deletes: Sequence[bytes] = ()) -> None:
        prefix = self._prefix
        items = [(prefix + key, value) for key, value in puts.items()]
        try:
            pipeline = self._client.pipeline(transaction=True)
            for start in range(0, len(items), _CHUNK):
                pipeline.mset(dict(items[start : start + _CHUNK]))
            if deletes:
                pipeline.delete(*[prefix + key for key in deletes])
            pipeline.execute()
        except redis.RedisError as exc:
            raise StoreError(_BACKEND, "write", str(exc)) from exc

    def scan(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        pattern = _escape_glob(self._prefix + prefix) + b"*"
        try:
            keys = sorted(self._client.scan_iter(match=pattern, count=1_000))
        except redis.RedisError as exc:
            raise StoreError(_BACKEND, "scan", str(exc)) from exc
        cut = len(self._prefix)
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            values = cast(list[bytes | None], self._client.mget(chunk))
            for key, value in zip(chunk, values, strict=True):
                if value is not None:
                    yield key[cut:], value


class RedisStore(_RedisTable):
    """User states in Redis (a single server; Redis Cluster comes with scale-out)."""

    backend = _BACKEND

    def __init__(self, url: str, namespace: str = "us", timeout_s: float = 2.0) -> None:
        self.url = url
        self.namespace = namespace
        try:
            client: redis.Redis = redis.Redis.from_url(
                url,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                # One quick retry, for a dropped connection. Outages are retried by the
                # processor (StoreRetry), which also reports them; more retries here multiply
                # (redis-py retries the reconnect too) and hid a hung server for over a minute.
                retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=1),
                retry_on_timeout=True,
            )
            client.ping()
        except redis.RedisError as exc:
            raise StoreError(_BACKEND, "open", f"{shown_url(url)}: {exc}") from exc
        super().__init__(client, f"{namespace}:s:".encode())

    def table(self, name: str) -> _RedisTable:
        return _RedisTable(self._client, f"{self.namespace}:t:{name}:".encode())

    def metadata_lock(self) -> contextlib.AbstractContextManager[object]:
        return _hold_metadata_lock(self._client, self._prefix + METADATA_LOCK_KEY, self.backend)

    def refresh(self) -> None:
        """Nothing to catch up with: every reader sees each write when it is acknowledged."""

    def close(self) -> None:
        self._client.close()


class _ClusterTable(_RedisTable):
    """The same table on Redis Cluster: reads and writes grouped per slot by the client.

    Keys carry a hash tag (``{...}``) around the store key, so everything of one user — its
    one record — maps to one slot, and a batch becomes one pipeline per primary.
    """

    def __init__(self, client: Any, prefix: bytes, wait_replicas: int, wait_ms: int) -> None:
        super().__init__(client, prefix)
        self._wait_replicas = wait_replicas
        self._wait_ms = wait_ms

    def _key(self, key: bytes) -> bytes:
        return self._prefix + b"{" + key + b"}"

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        # One MGET per slot in one pipeline (what mget_nonatomic does), sent through _send so
        # that a shard outage fails the call in seconds instead of blocking it.
        by_slot: dict[int, list[int]] = {}
        full = [self._key(key) for key in keys]
        for index, key in enumerate(full):
            by_slot.setdefault(self._client.keyslot(key), []).append(index)
        pipeline = self._client.pipeline()
        try:  # an uncovered slot raises here (SlotNotCoveredError)
            node_of = self._client.nodes_manager.get_node_from_slot
            for slot, indexes in by_slot.items():
                keys_of_slot = [full[i] for i in indexes]
                pipeline.execute_command("MGET", *keys_of_slot, target_nodes=[node_of(slot)])
        except _CLUSTER_ERRORS as exc:
            raise StoreError(_BACKEND_CLUSTER, "read", str(exc)) from exc
        replies = self._send(pipeline, "read")
        out: list[bytes | None] = [None] * len(keys)
        for indexes, values in zip(by_slot.values(), replies, strict=True):
            for index, value in zip(indexes, values, strict=True):
                out[index] = value
        return out

    def write(self, puts: Mapping[bytes, bytes], deletes: Sequence[bytes] = ()) -> None:
        pipeline = self._client.pipeline()
        for key, value in puts.items():
            pipeline.set(self._key(key), value)
        for key in deletes:
            pipeline.delete(self._key(key))
        self._send(pipeline, "write")
        if self._wait_replicas:
            try:
                self._wait()
            except _CLUSTER_ERRORS as exc:
                raise StoreError(_BACKEND_CLUSTER, "write", str(exc)) from exc

    def _send(self, pipeline: Any, operation: str) -> list[Any]:
        """Send a pipeline once (the client retries the whole of it ``retries`` times).

        ``pipeline.execute()`` re-sends each failed command on its own, each with the client's
        full retries and socket timeouts: with a shard down or hung, one batch blocked for
        over ten minutes. Without redirections a failed batch raises at once, as StoreError;
        the processor's StoreRetry waits out the outage and sends it again (writes are
        idempotent per user).
        """
        stack = pipeline._execution_strategy.command_queue  # the pinned redis-py's queue
        try:
            return cast(list[Any], pipeline.send_cluster_commands(stack, allow_redirections=False))
        except _CLUSTER_ERRORS as exc:
            if isinstance(exc, redis.exceptions.MovedError):
                self._refresh_slots()  # followed by the next attempt, not by redis-py
            raise StoreError(_BACKEND_CLUSTER, operation, str(exc)) from exc
        finally:
            pipeline.reset()

    def _refresh_slots(self) -> None:
        """Reload the slot map after a failover moved slots (best effort: the next attempt
        fails and retries again if the cluster cannot answer yet)."""
        with contextlib.suppress(*_CLUSTER_ERRORS):
            self._client.nodes_manager.initialize()

    def _wait(self) -> None:
        """Acknowledged by replicas too, so a write survives a primary failover (WAIT)."""
        from redis.cluster import RedisCluster

        acks = self._client.execute_command(
            "WAIT", self._wait_replicas, self._wait_ms, target_nodes=RedisCluster.PRIMARIES
        )
        counts = acks.values() if isinstance(acks, dict) else [acks]
        if min(int(count) for count in counts) < self._wait_replicas:
            raise StoreError(
                _BACKEND_CLUSTER, "write", f"not acknowledged by {self._wait_replicas} replica(s)"
            )

    def scan(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        from redis.cluster import RedisCluster

        pattern = _escape_glob(self._prefix + b"{" + prefix) + b"*"
        try:
            keys = sorted(
                self._client.scan_iter(
                    match=pattern, count=1_000, target_nodes=RedisCluster.PRIMARIES
                )
            )
            cut = len(self._prefix) + 1
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start : start + _CHUNK]
                values = cast(list[bytes | None], self._client.mget_nonatomic(chunk))
                for key, value in zip(chunk, values, strict=True):
                    if value is not None:
                        yield key[cut:-1], value
        except _CLUSTER_ERRORS as exc:
            raise StoreError(_BACKEND_CLUSTER, "scan", str(exc)) from exc


def cluster_options(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """A cluster setting's seed nodes, and the client options its first URL gives.

    Several nodes may be listed: the client starts from any that answers (the one node a
    setting named may be the primary that just failed over). Credentials (URL-decoded), TLS
    and the query's options (``ssl_ca_certs``...) come from the first URL, read as redis-py
    reads one."""
    from redis.connection import SSLConnection, parse_url

    read = cast("Callable[[str], dict[str, Any]]", parse_url)  # untyped in redis-py
    urls = redis_nodes(url)
    first = read(urls[0])
    options = {
        k: v for k, v in first.items() if k not in ("host", "port", "db", "connection_class")
    }
    if first.get("connection_class") is SSLConnection:
        options["ssl"] = True
    nodes = []
    for node in urls:
        parts = urlsplit(node)
        nodes.append((parts.hostname or "", parts.port or 6379))
    return nodes, options


class RedisClusterStore(_ClusterTable):
    """User states in Redis Cluster; MOVED/ASK redirections and failovers are retried by the
    client. ``wait_replicas`` (default 1) makes each batch wait for replica acknowledgement."""

    backend = _BACKEND_CLUSTER

    def __init__(
        self,
        url: str,
        namespace: str = "us",
        timeout_s: float = 2.0,
        wait_replicas: int = 1,
        wait_ms: int = 1_000,
    ) -> None:
        from redis.cluster import ClusterNode, RedisCluster

        self.url = url
        self.namespace = namespace
        nodes, options = cluster_options(url)
        node = cast("Callable[[str, int], Any]", ClusterNode)  # untyped in redis-py
        try:
            client = RedisCluster(
                startup_nodes=[node(host, port) for host, port in nodes],
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                # One retry of a call (and of a whole pipeline), as for a single server: the
                # processor's StoreRetry waits out outages and reports them; eight retries
                # here, multiplied by reconnects and socket timeouts, hid a hung shard.
                retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=1),
                **options,
            )
            client.ping()
        except _CLUSTER_ERRORS as exc:
            raise StoreError(_BACKEND_CLUSTER, "open", f"{shown_url(url)}: {exc}") from exc
        super().__init__(client, f"{namespace}:s:".encode(), wait_replicas, wait_ms)

    def table(self, name: str) -> _ClusterTable:
        return _ClusterTable(
            self._client, f"{self.namespace}:t:{name}:".encode(), self._wait_replicas,
            self._wait_ms,
        )  # fmt: skip

    def metadata_lock(self) -> contextlib.AbstractContextManager[object]:
        return _hold_metadata_lock(self._client, self._key(METADATA_LOCK_KEY), self.backend)

    def refresh(self) -> None:
        """Nothing to catch up with: reads go to the primaries."""

    def close(self) -> None:
        self._client.close()
