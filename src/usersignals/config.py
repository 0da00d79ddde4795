"""The one typed settings object usersignals is built from.

Settings come from code, from a TOML file (``usersignals ... --config FILE``) or from
``USERSIGNALS_*`` environment variables (nested names joined with ``__``, e.g.
``USERSIGNALS_PROCESSING__BATCH_SIZE=50000``); later sources override earlier ones.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec

from usersignals.config_validation import convert_settings
from usersignals.errors import ConfigurationError, InvalidSettingError

# Types with bounds: a bad value is refused at load time, naming the setting, the value and
# what is allowed. Durations (``unit`` in the metadata) also take "250ms", "10s" or a timedelta.
Count = Annotated[int, msgspec.Meta(ge=0)]
PositiveCount = Annotated[int, msgspec.Meta(ge=1)]
Milliseconds = Annotated[int, msgspec.Meta(ge=0, extra={"unit": "ms"})]
PositiveMilliseconds = Annotated[int, msgspec.Meta(ge=1, extra={"unit": "ms"})]
Seconds = Annotated[float, msgspec.Meta(ge=0, extra={"unit": "s"})]
Port = Annotated[int, msgspec.Meta(ge=1, le=65_535)]
PortOrZero = Annotated[int, msgspec.Meta(ge=0, le=65_535)]
Fraction = Annotated[float, msgspec.Meta(ge=0, le=1)]


class StoreSettings(msgspec.Struct, forbid_unknown_fields=True):
    #: "rocksdb" (embedded, the default), "redis" or "redis-cluster" (shared by processors
    #: and serving replicas; ``redis_url`` names one or more nodes of the cluster, separated
    #: by commas: a process starts while any of them answers).
    backend: Literal["rocksdb", "redis", "redis-cluster"] = "rocksdb"
    path: str = "data/store"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_namespace: str = "us"
    #: Redis Cluster: replicas that must acknowledge each batch before it counts as written.
    redis_wait_replicas: Count = 1
    #: fsync every write: survives a machine crash, not only a process crash.
    sync: bool = False

    def where(self) -> str:
        """The store for people (a start line): its path, or its backend and nodes without
        their credentials."""
        if self.backend == "rocksdb":
            return self.path
        urls = redis_nodes(self.redis_url) if self.backend == "redis-cluster" else [self.redis_url]
        shown = []
        for node in map(urlsplit, urls):
            where = node.netloc.rpartition("@")[2]  # without credentials, [IPv6] kept
            shown.append(f"{node.scheme}://{where}{node.path}")
        return f"{self.backend} {','.join(shown)}"


class EventSettings(msgspec.Struct, forbid_unknown_fields=True):
    #: Accept only these actions (empty: any action).
    allowed_actions: list[str] = []
    #: Accept only these surfaces (empty: any surface).
    allowed_surfaces: list[str] = []
    max_event_bytes: PositiveCount = 8192
    #: The longest user id, in Unicode code points (not bytes): it is part of every state key.
    max_user_id_chars: PositiveCount = 128
    #: How far ahead of the wall clock an event time may be, in milliseconds.
    max_future_ms: Milliseconds = 86_400_000


class ProcessingSettings(msgspec.Struct, forbid_unknown_fields=True):
    batch_size: PositiveCount = 50_000
    #: Also store every raw event per user (only needed for the serving raw mode).
    keep_raw_events: bool = False
    #: A repeat of an ``event_id`` within this many milliseconds (behind the user's newest
    #: event) is dropped and counted; 0 turns the check off. See processing/dedupe.py.
    dedupe_horizon_ms: Milliseconds = 86_400_000
    #: A user record written larger than this is counted and named in a warning, once a
    #: minute (0: off): it is rewritten whole in every batch. See processing/large_records.py.
    large_record_bytes: Count = 1 << 20


class SpoolSettings(msgspec.Struct, forbid_unknown_fields=True):
    #: Where events accepted over HTTP are logged durably before the processor applies them.
    path: str = "data/spool"
    #: The API answers 503 (Retry-After) and /readyz 503 once this many spooled bytes are not
    #: yet applied by the processor: a stopped processor cannot make the disk fill up.
    max_backlog_bytes: PositiveCount = 1 << 30
    #: ... and when the spool's filesystem has less free space than this.
    min_free_bytes: Count = 64 << 20
    #: A writer starts a new file after this many bytes, so applied files can be deleted.
    segment_bytes: PositiveCount = 64 << 20
    #: Retry-After of those 503s, and how long a failed spool write keeps a worker not-ready.
    retry_after_s: PositiveCount = 5


class SourceSettings(msgspec.Struct, forbid_unknown_fields=True):
    """Where one lookup source's records come from (the signals name the source)."""

    #: "table" (embedded, `usersignals tables load`), "redis" (hashes) or "http" (batch API).
    kind: Literal["table", "redis", "http"] = "table"
    #: redis://... for "redis"; the POST endpoint for "http".
    url: str = ""
    #: Redis key prefix of the hashes ("items:" → items:<key>).
    prefix: str = ""
    timeout_ms: PositiveMilliseconds = 1_000
    max_batch: PositiveCount = 1_000
    concurrency: PositiveCount = 4
    #: "hold" (retry until the source recovers) or "missing" (go on, fields missing).
    on_failure: Literal["hold", "missing"] = "hold"
    retries: Count = 3
    cache_capacity: Count = 200_000
    cache_ttl_s: Seconds = 300.0
    negative_ttl_s: Seconds = 60.0


class EnrichSettings(msgspec.Struct, forbid_unknown_fields=True):
    #: Per lookup source name; a source not listed is the embedded table of that name.
    sources: dict[str, SourceSettings] = {}


#: A librdkafka property's value: librdkafka takes each as text, and a TOML file may write a
#: number or a boolean as itself (``"fetch.max.bytes" = 1048576``); ``librdkafka_settings``
#: gives the text.
LibrdkafkaValue = str | int | float | bool


class KafkaSettings(msgspec.Struct, forbid_unknown_fields=True):
    #: Empty: no Kafka; ``usersignals run`` then processes the HTTP spool only. Set for
    #: ``usersignals serve`` too: the API then produces accepted events to ``topic``.
    bootstrap_servers: str = ""
    topic: str = "engagements"
    group_id: str = "usersignals"
    #: Where undecodable or invalid events go, with the reason and source in headers.
    dead_letter_topic: str = "engagements.dead-letter"
    #: A micro-batch closes at this many events or after this wait, whichever comes first.
    #: Keeping up, a batch closes on the wait; the bound only counts when the processor is
    #: behind (a backlog, a restart), and there a larger batch catches up faster: a user in
    #: it is read, decoded, encoded and written once for all of its events in the batch.
    #: The engine took 1 M reference events at 100,000-104,000 events/s in batches of
    #: 100,000, against 68,500-72,800 in batches of 20,000 (bench/engine.py), for about
    #: 230 MB more memory (``--rss``).
    batch_max_events: PositiveCount = 100_000
    batch_max_wait_ms: PositiveMilliseconds = 250
    session_timeout_ms: PositiveMilliseconds = 10_000
    #: Any other librdkafka consumer settings (security, fetch sizes...).
    consumer: dict[str, LibrdkafkaValue] = {}
    #: The API (in Kafka mode) answers 503 when the broker has not acknowledged by then.
    produce_timeout_ms: PositiveMilliseconds = 5_000
    #: Any other librdkafka settings of the API's producer.
    producer: dict[str, LibrdkafkaValue] = {}


class GcSettings(msgspec.Struct, forbid_unknown_fields=True):
    """Garbage collection in each serving worker (serving/gc_policy.py says why)."""

    #: Freeze the heap once the worker is built: collections never walk it again.
    freeze: bool = True
    #: Young-generation threshold (CPython's default is 700): young collections stay
    #: automatic, but run less often.
    young_threshold: PositiveCount = 50_000
    #: > 0: old generations are never collected automatically; a full collection runs after a
    #: response, when no other request is in flight, at most this often (after twice this
    #: even when the worker is never idle). 0: CPython's automatic old-generation collection.
    full_interval_ms: Milliseconds = 5_000


class ServingSettings(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: Port = 8080
    workers: PositiveCount = 1
    #: Bearer token for DELETE /v1/users/{id}; empty disables the endpoint (403).
    admin_token: str = ""
    #: How often a worker catches up with the processor's writes, in milliseconds.
    refresh_interval_ms: PositiveMilliseconds = 100
    #: "stateful" (read stored states) or "raw" (recompute from raw events; for comparison).
    mode: Literal["stateful", "raw"] = "stateful"
    #: Bearer token for reads (GET /v1/users/{id}/signals, POST /v1/signals/batch,
    #: GET /v1/signals); empty: reads are open.
    read_token: str = ""
    #: Bearer token for POST /v1/events; empty: ingest is open.
    ingest_token: str = ""
    #: Serve /metrics on this port of ``host`` only (not on the API port); 0: on the API port.
    metrics_port: PortOrZero = 0
    #: A store read slower than this answers 503; reads run off the event loop.
    read_timeout_ms: PositiveMilliseconds = 1_000
    #: A connection whose request headers do not arrive within this is closed (granian).
    header_timeout_ms: PositiveMilliseconds = 5_000
    #: A request body not received within this answers 408 and the connection is closed.
    body_timeout_ms: PositiveMilliseconds = 10_000
    #: Memory budget of each worker's decoded-state cache (an estimate; see state/cache.py).
    state_cache_bytes: Count = 256 << 20
    #: Log what the API answers (a sampled share, 0 to 1, of GET /v1/users/{id}/signals), for
    #: ``usersignals consistency`` and training on served values. ``feature_log_sink``:
    #: "jsonl" or "parquet" files in ``feature_log_path`` (empty: no logging), or "kafka": the
    #: topic ``feature_log_topic`` on ``feature_log_bootstrap_servers`` (empty: the
    #: ``kafka.bootstrap_servers``). See docs/offline.md.
    feature_log_path: str = ""
    feature_log_rate: Fraction = 0.01
    feature_log_sink: Literal["jsonl", "parquet", "kafka"] = "jsonl"
    feature_log_topic: str = ""
    feature_log_bootstrap_servers: str = ""
    #: Parquet: records held in memory before they are written as a row group (bounds the
    #: memory, and what a crash loses); a file is finished after ``feature_log_rows_per_file``.
    feature_log_buffer_rows: PositiveCount = 1_000
    feature_log_rows_per_file: PositiveCount = 100_000
    gc: GcSettings = msgspec.field(default_factory=GcSettings)


class Settings(msgspec.Struct, forbid_unknown_fields=True):
    #: The module that defines the signals (dotted name or a .py path).
    signals: str = "usersignals.examples.reference"
    store: StoreSettings = msgspec.field(default_factory=StoreSettings)
    events: EventSettings = msgspec.field(default_factory=EventSettings)
    processing: ProcessingSettings = msgspec.field(default_factory=ProcessingSettings)
    spool: SpoolSettings = msgspec.field(default_factory=SpoolSettings)
    kafka: KafkaSettings = msgspec.field(default_factory=KafkaSettings)
    enrich: EnrichSettings = msgspec.field(default_factory=EnrichSettings)
    serving: ServingSettings = msgspec.field(default_factory=ServingSettings)

    @classmethod
    def load(
        cls,
        path: Path | None = None,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Settings:
        data: dict[str, Any] = {}
        env = os.environ if environ is None else environ
        if path is None and env.get("USERSIGNALS_CONFIG"):
            path = Path(env["USERSIGNALS_CONFIG"])
        if path is not None:
            try:
                data = tomllib.loads(path.read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigurationError(f"cannot read settings file {path}: {exc}") from exc
        _merge(data, _from_environment(env))
        _merge(data, dict(overrides or {}))
        settings = convert_settings(data, cls)
        check_feature_log(settings)
        check_redis_urls(settings)
        return settings


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    prefix = "USERSIGNALS_"
    data: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(prefix) or name == "USERSIGNALS_CONFIG":
            continue
        path = name[len(prefix) :].lower().split("__")
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigurationError(
                    f"{name} sets a field inside {prefix}{part.upper()}, which is also set "
                    "as a whole; use one or the other"
                )
            node = child
        if isinstance(node.get(path[-1]), dict):
            raise ConfigurationError(f"{name} is a section: set its fields with __ instead")
        if path[-1] in ("allowed_actions", "allowed_surfaces"):
            node[path[-1]] = [part.strip() for part in value.split(",") if part.strip()]
        else:
            node[path[-1]] = value
    return data


def _merge(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        elif value is not None:
            into[key] = value


def check_feature_log(settings: Settings) -> None:
    """The feature log settings that only make sense together (each alone is checked by type)."""
    serving = settings.serving
    if serving.feature_log_sink == "kafka" and serving.feature_log_rate > 0:
        if not serving.feature_log_topic:
            allowed = "a topic name when serving.feature_log_sink is kafka"
            raise InvalidSettingError("serving.feature_log_topic", "", allowed)
        if not (serving.feature_log_bootstrap_servers or settings.kafka.bootstrap_servers):
            raise InvalidSettingError(
                "serving.feature_log_bootstrap_servers",
                "",
                "a broker list (or kafka.bootstrap_servers) when serving.feature_log_sink is kafka",
            )
    if serving.feature_log_buffer_rows > serving.feature_log_rows_per_file:
        raise InvalidSettingError(
            "serving.feature_log_buffer_rows",
            serving.feature_log_buffer_rows,
            f"at most serving.feature_log_rows_per_file ({serving.feature_log_rows_per_file})",
        )


#: What a Redis URL setting takes, for the message that refuses one.
REDIS_URLS = (
    "a URL such as redis://HOST:PORT/0 (redis://, rediss:// or unix:// for one server; for "
    "redis-cluster, one or more nodes redis://HOST:PORT separated by commas)"
)


def check_redis_urls(settings: Settings) -> None:
    """The Redis URLs a backend or a lookup source will connect to: refused at load, naming
    the setting, rather than as a client library's traceback when the command starts."""
    store = settings.store
    if store.backend != "rocksdb":
        _check_redis_url("store.redis_url", store.redis_url, store.backend == "redis-cluster")
    for name, source in settings.enrich.sources.items():
        if source.kind == "redis":
            _check_redis_url(f"enrich.sources.{name}.url", source.url, cluster=False)


def redis_nodes(url: str) -> list[str]:
    """The node URLs of a ``redis_url`` setting (a cluster's may list several)."""
    return [part.strip() for part in url.split(",")]


def _check_redis_url(setting: str, url: str, cluster: bool) -> None:
    # Only a cluster's setting lists nodes: a single server's password may hold a comma.
    nodes = redis_nodes(url) if cluster else [url]
    schemes = ("redis", "rediss") if cluster else ("redis", "rediss", "unix")
    for node in nodes:
        try:
            parts = urlsplit(node)
            _ = parts.port  # raises ValueError when the port is no number
        except ValueError:
            raise InvalidSettingError(setting, url, REDIS_URLS) from None
        where = parts.path if parts.scheme == "unix" else parts.hostname
        if parts.scheme not in schemes or not where:
            raise InvalidSettingError(setting, url, REDIS_URLS)
