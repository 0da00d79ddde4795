"""Redis as the state store: shared by many processors and serving replicas.

One user's record is one Redis string, so a user's states and progress change together (one
``SET``); a micro-batch is written in one ``MULTI``/``EXEC`` pipeline and read with ``MGET``.
Connection errors and timeouts are retried with backoff by the client, then raised as
:class:`~usersignals.errors.StoreError`. Keys: ``<namespace>:s:<key>`` for user records and
metadata, ``<namespace>:t:<table>:<key>`` for enrichment tables.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from usersignals.errors import StoreError

_BACKEND = "redis"
_CHUNK = 5_000
_GLOB_SPECIAL = b"*?[]\\"


def _escape_glob(prefix: bytes) -> bytes:
    return b"".join(b"\\" + bytes([c]) if c in _GLOB_SPECIAL else bytes([c]) for c in prefix)


class _RedisTable:
    def __init__(self, client: redis.Redis, prefix: bytes) -> None:
        self._client = client
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
                retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=5),
                retry_on_timeout=True,
            )
            client.ping()
        except redis.RedisError as exc:
            raise StoreError(_BACKEND, "open", f"{url}: {exc}") from exc
        super().__init__(client, f"{namespace}:s:".encode())

    def table(self, name: str) -> _RedisTable:
        return _RedisTable(self._client, f"{self.namespace}:t:{name}:".encode())

    def refresh(self) -> None:
        """Nothing to catch up with: every reader sees each write when it is acknowledged."""

    def info(self) -> dict[str, Any]:
        result: dict[str, Any] = self._client.info()
        return result

    def close(self) -> None:
        self._client.close()
