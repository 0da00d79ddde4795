"""The parts every process builds from its settings: the state store, the event decoder,
the signal registry and the Materializer.

Apart from :mod:`usersignals.app` (the processors, runners and serving workers around them),
so that what needs only these parts — an offline job's shard process, a CLI command that
reads the store — imports neither the Kafka client nor the serving stack.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from usersignals.config import Settings, SourceSettings
from usersignals.enrich.cache import RecordCache
from usersignals.enrich.materializer import Materializer, SourcePolicy
from usersignals.enrich.metrics import EnrichmentMetrics
from usersignals.enrich.sources import HttpBatchSource, LookupSource, RedisHashSource, TableSource
from usersignals.errors import ConfigurationError, StoreError
from usersignals.events.decode import EventDecoder, EventPolicy
from usersignals.signals.registry import SignalRegistry
from usersignals.state.rocks import RocksStore
from usersignals.state.store import StateStore

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds between tries to open a networked store that is down when a process starts:
#: doubling from the first, up to the last.
STORE_WAIT_S = (0.5, 10.0)


def open_store(settings: Settings, read_only: bool = False) -> StateStore:
    """The configured state store: embedded RocksDB (default) or Redis."""
    store = settings.store
    if store.backend in ("redis", "redis-cluster"):
        # Imported only for Redis: the client library takes 65 ms to import.
        from usersignals.state.redis import RedisClusterStore, RedisStore

        if store.backend == "redis":
            return RedisStore(store.redis_url, store.redis_namespace)
        return RedisClusterStore(
            store.redis_url, store.redis_namespace, wait_replicas=store.redis_wait_replicas
        )
    if read_only:
        path = Path(store.path)
        if not (path / "CURRENT").exists():
            raise ConfigurationError(
                f"no state store at {path}: start the processor first (usersignals run), "
                "or replay events into it (usersignals replay)"
            )
        return RocksStore(path, read_only=True)
    return RocksStore(Path(store.path), sync=store.sync)


def build_materializer(
    settings: Settings,
    registry: SignalRegistry,
    store: StateStore,
    metrics: CollectorRegistry | None = None,
) -> Materializer:
    """The lookup sources the signals name, each with its cache and failure policy."""
    sources: dict[str, LookupSource] = {}
    policies: dict[str, SourcePolicy] = {}
    caches: dict[str, SourceSettings] = {}
    for name in registry.lookup_sources:
        config = settings.enrich.sources.get(name, SourceSettings())
        timeout = config.timeout_ms / 1000
        if config.kind == "table":
            sources[name] = TableSource(name, store.table(name))
        elif config.kind == "redis":
            sources[name] = RedisHashSource(name, config.url, config.prefix, timeout)
        else:  # "http": the settings' Literal type admits nothing else
            sources[name] = HttpBatchSource(
                name, config.url, timeout, config.max_batch, config.concurrency
            )
        policies[name] = SourcePolicy(config.on_failure, config.retries)
        caches[name] = config
    return Materializer(
        sources,
        caches={
            name: RecordCache(c.cache_capacity, c.cache_ttl_s, c.negative_ttl_s)
            for name, c in caches.items()
        },
        policies=policies,
        metrics=EnrichmentMetrics(metrics) if metrics is not None else None,
    )


def warn_of_empty_tables(settings: Settings, registry: SignalRegistry, store: StateStore) -> None:
    """Say which embedded tables the signals enrich from hold nothing: their events would be
    applied with every enriched field missing, without a word (an embedded store only:
    asking Redis for one key of a prefix may walk its whole keyspace)."""
    if settings.store.backend != "rocksdb":
        return
    for name in embedded_tables(settings, registry):
        if next(store.table(name).scan(), None) is None:
            logger.warning(
                "the signals enrich from table %r, which holds no record in %s: every event "
                "is applied with its fields missing; load it first "
                "(usersignals tables load %s FILE --store %s)",
                name, settings.store.path, name, settings.store.path,
            )  # fmt: skip


def embedded_tables(settings: Settings, registry: SignalRegistry) -> list[str]:
    """The lookup sources the signals enrich from that are tables of the store (the kind of
    a source not configured), sorted."""
    sources = settings.enrich.sources
    return [
        name
        for name in registry.lookup_sources
        if sources.get(name, SourceSettings()).kind == "table"
    ]


def build_registry(settings: Settings) -> SignalRegistry:
    return SignalRegistry.from_module(settings.signals)


def build_decoder(settings: Settings) -> EventDecoder:
    events = settings.events
    return EventDecoder(
        EventPolicy(
            allowed_actions=frozenset(events.allowed_actions) or None,
            allowed_surfaces=frozenset(events.allowed_surfaces) or None,
            max_event_bytes=events.max_event_bytes,
            max_user_id_chars=events.max_user_id_chars,
            max_future_ms=events.max_future_ms,
        )
    )


def once_the_store_answers(
    settings: Settings, attempt: Callable[[], T], stop: threading.Event | None = None
) -> T | None:
    """``attempt()`` (which opens the store), tried again until a networked store answers;
    ``None`` if ``stop`` is set first. A Redis store that is down when a process starts is
    waited for, as an outage later is: a processor or a serving worker started (or
    restarted) during one would otherwise stay down, and granian stops the whole server when
    a respawned worker exits at once. RocksDB's failures to open are mistakes to fix (a path,
    a lock), and so is a store that refuses us (a password): those raise."""
    delay, longest = STORE_WAIT_S
    stopped = stop or threading.Event()
    while True:
        try:
            return attempt()
        except StoreError as exc:
            if settings.store.backend == "rocksdb" or _refused_us(exc):
                raise
            logger.warning(
                "the state store does not answer (%s); trying again in %.1f s", exc, delay
            )
        if stopped.wait(delay):
            return None
        delay = min(delay * 2, longest)


def _refused_us(error: StoreError) -> bool:
    """Whether the store answered and refused this client (a password): a mistake to fix,
    not an outage to wait out. Anywhere in the chain of causes: the cluster client wraps
    the refusal in an error of its own."""
    from redis.exceptions import AuthenticationError

    cause: BaseException | None = error.__cause__
    while cause is not None:
        if isinstance(cause, AuthenticationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False
