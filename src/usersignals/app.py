"""The composition root: builds every part from one :class:`Settings`, and nothing else."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from usersignals.assembly import (
    build_decoder,
    build_materializer,
    build_registry,
    open_store,
    warn_of_empty_tables,
)
from usersignals.closing import Closing, SupportsClose, close_all
from usersignals.config import Settings
from usersignals.errors import SignalsMismatchError
from usersignals.events.decode import EventDecoder
from usersignals.ingest.accepted import AcceptedLog, SpoolLimits, SpoolLog
from usersignals.ingest.dead_letter import DeadLetterFile
from usersignals.ingest.kafka import KafkaSource
from usersignals.ingest.kafka_dead_letter import DeadLetterTopic
from usersignals.ingest.spool import SpoolReader, SpoolWriter, decode_mark, mark_key
from usersignals.processing.engine import Engine
from usersignals.processing.kafka_runner import KafkaRunner
from usersignals.processing.metrics import ProcessorMetrics
from usersignals.processing.runner import SpoolRunner
from usersignals.processing.store_retry import StoreRetry
from usersignals.serving.feature_log import FeatureLog, build_sink
from usersignals.serving.guards import FrontDoor, Tokens
from usersignals.serving.identity import WriterCheck, mismatch
from usersignals.serving.raw import RawRecomputer
from usersignals.serving.reader import Reader, SignalReader
from usersignals.serving.state import ServingState, worker_name
from usersignals.signals.identity import signals_identity
from usersignals.signals.registry import SignalRegistry
from usersignals.state.keys import SIGNALS_KEY
from usersignals.state.store import StateStore
from usersignals.state.versions import (
    changed_since_computed,
    load_versions,
    read_backfill_offsets,
    readded,
    refuse_served_undeclared,
    undeclared_problem,
)

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

logger = logging.getLogger(__name__)


@dataclass
class Processor(Closing):
    """What a writer process holds: the store, the engine and the event decoder."""

    settings: Settings
    store: StateStore
    registry: SignalRegistry
    engine: Engine
    decoder: EventDecoder

    def close(self) -> None:
        self.store.close()

    def warn_of_empty_tables(self) -> None:
        """Said as processing starts, not when built: a caller may load the tables through
        this processor's store in between (`./dev demo` does)."""
        warn_of_empty_tables(self.settings, self.registry, self.store)


def build_processor(settings: Settings, metrics: CollectorRegistry | None = None) -> Processor:
    registry = build_registry(settings)
    store = open_store(settings)
    try:
        engine = Engine(
            registry,
            store,
            build_materializer(settings, registry, store, metrics),
            keep_raw_events=settings.processing.keep_raw_events,
            dedupe_horizon_ms=settings.processing.dedupe_horizon_ms,
        )
        engine.large_records.limit_bytes = settings.processing.large_record_bytes
        # A version's state holds what its definition computed: another definition under the
        # same version would mix two meanings in it, silently.
        # As `signals apply` recorded them (the version table) or the last processor did.
        recorded = store.get_many([SIGNALS_KEY])[0]
        table = load_versions(store)
        changed = changed_since_computed(recorded, table, registry)
        if changed:
            raise SignalsMismatchError(
                f"signals {', '.join(changed)} are defined otherwise than when this store's "
                "states were computed: bump its version to change what a signal computes"
            )
        # A version `signals apply` recorded removed: computing it again would build on
        # what is left of its state (dropped user by user, missing every event since).
        refused = readded(store, [signal.key for signal in registry.computed], table)
        if refused:
            reasons = "; ".join(f"{key}: {why}" for key, why in refused.items())
            raise SignalsMismatchError(f"signals declared again after their removal: {reasons}")
        # A module rolled back past a cut-over: its readers would serve the module's own
        # default (retired, or not what the store serves) in its place.
        refuse_served_undeclared(table.served, registry)
        # Record which signals write this store: readers refuse to serve other ones.
        store.write({SIGNALS_KEY: signals_identity(settings.signals, registry)})
    except Exception:
        store.close()
        raise
    return Processor(settings, store, registry, engine, build_decoder(settings))


def build_spool_runner(
    processor: Processor, metrics: ProcessorMetrics | None = None
) -> SpoolRunner:
    """The spool processor; it takes ``processor`` over and closes it when closed."""
    settings = processor.settings
    spool = Path(settings.spool.path)
    try:
        processor.warn_of_empty_tables()
        return SpoolRunner(
            processor.engine,
            processor.decoder,
            SpoolReader(spool),
            DeadLetterFile(spool / "dead-letter" / "processor.jsonl"),
            batch_size=settings.processing.batch_size,
            retry=StoreRetry(metrics=metrics),
            owns=[processor],
        )
    except BaseException:
        processor.close()
        raise


def warn_of_another_topic(store: StateStore, topic: str) -> None:
    """Say so when the store's backfill hand-over names other topics than ``topic``: the
    users' progress is per ``topic/partition``, so the events of both are applied twice but
    for the repeats the event-id dedupe drops (within its horizon)."""
    topics = sorted({name.rpartition("/")[0] for name in read_backfill_offsets(store)})
    if topics and topic not in topics:
        logger.warning(
            "the store's backfill handed over at the offsets of topic(s) %s, and this processor "
            "consumes %r: if it holds the same events, they are applied twice (but for repeats "
            "within processing.dedupe_horizon_ms); consume the exported topic, or backfill "
            "this one's export",
            ", ".join(map(repr, topics)), topic,
        )  # fmt: skip


def build_kafka_runner(processor: Processor, metrics: ProcessorMetrics) -> KafkaRunner:
    """The Kafka processor; it takes ``processor`` over and closes it when closed.

    A revocation waits for the batches in flight to be committed.
    """
    kafka = processor.settings.kafka
    holder: list[KafkaRunner] = []

    def revoked(partitions: list[str]) -> None:
        if holder:
            # Another processor may write these users now, before a block in hand is.
            holder[0].engine.read_ahead.drop_all()
            holder[0].wait_for_drain()

    owned: list[SupportsClose] = [processor]  # closed here if the runner cannot be built
    try:
        processor.warn_of_empty_tables()
        warn_of_another_topic(processor.store, kafka.topic)
        source = KafkaSource(kafka, on_revoke=revoked)
        owned.insert(0, source)
        runner = KafkaRunner(
            processor.engine,
            processor.decoder,
            source,
            DeadLetterTopic(kafka),
            metrics,
            StoreRetry(metrics=metrics),
            owns=[processor],
        )
    except BaseException:
        close_all(owned)
        raise
    holder.append(runner)
    return runner


def build_serving_state(settings: Settings) -> ServingState:
    """What one serving worker needs: a reader of the store, the spool, the settings."""
    reader = open_store_reader(settings)
    spool = Path(settings.spool.path)
    name = worker_name()
    served: Reader = reader
    if settings.serving.mode == "raw":
        served = RawRecomputer(reader.registry, reader.store)
    state = ServingState(
        registry=reader.registry,
        reader=served,
        decoder=build_decoder(settings),
        log=build_accepted_log(settings, reader.store, name),
        dead_letters=DeadLetterFile(spool / "dead-letter" / f"{name}.jsonl"),
        admin_token=settings.serving.admin_token,
        refresh_interval_s=settings.serving.refresh_interval_ms / 1000,
        front=front_door(settings),
        feature_log=build_feature_log(settings),
        writer=WriterCheck(settings.signals, reader.registry),
    )
    if state.feature_log is not None:
        state.feature_log.bind_metrics(state.metrics)
    return state


def front_door(settings: Settings) -> FrontDoor:
    serving = settings.serving
    return FrontDoor(
        tokens=Tokens(read=serving.read_token, ingest=serving.ingest_token),
        offload_reads=settings.store.backend != "rocksdb",
        read_timeout_s=serving.read_timeout_ms / 1000,
        body_timeout_s=serving.body_timeout_ms / 1000,
        metrics_port=serving.metrics_port,
        metrics_host=serving.host,
    )


def build_feature_log(settings: Settings) -> FeatureLog | None:
    sink = build_sink(settings)
    return None if sink is None else FeatureLog(sink, settings.serving.feature_log_rate)


def build_accepted_log(settings: Settings, store: StateStore, name: str) -> AcceptedLog:
    """Kafka when configured (events produced to the topic), else the bounded spool."""
    if settings.kafka.bootstrap_servers:
        from usersignals.ingest.kafka_log import KafkaLog

        return KafkaLog(settings.kafka)
    spool = settings.spool

    def applied(partitions: list[str]) -> list[int]:
        # The processor's marks: what of each file is applied. A RocksDB secondary sees them
        # as of its last refresh, which only overstates the backlog a little.
        stored = store.get_many([mark_key(partition) for partition in partitions])
        return [decode_mark(value)[0] for value in stored]

    limits = SpoolLimits(spool.max_backlog_bytes, spool.min_free_bytes, spool.retry_after_s)
    return SpoolLog(SpoolWriter(Path(spool.path), name, spool.segment_bytes), limits, applied)


def open_store_reader(settings: Settings, signals: str | None = None) -> SignalReader:
    """A reader over a store another process may be writing (a RocksDB secondary).

    The signals module comes from configuration (or ``signals``) only, never from the store:
    whoever can write the store must not be able to choose code a reader imports. A store
    whose writer recorded other signals (another module, or other definitions or versions)
    is refused, clearly, rather than misread.
    """
    module = signals or settings.signals
    store = open_store(settings, read_only=True)
    try:
        registry = SignalRegistry.from_module(module)
        problem = mismatch(store.get_many([SIGNALS_KEY])[0], module, registry)
        if problem is not None:
            raise SignalsMismatchError(problem)
        # Made, the reader serves the store's versions (a cut-over's choice): refused, as the
        # processor is, when the module does not declare one (it would answer its name with
        # another version).
        reader = SignalReader(registry, store, cache_bytes=settings.serving.state_cache_bytes)
        problem = undeclared_problem(registry.served_undeclared)
        if problem is not None:
            raise SignalsMismatchError(problem)
    except Exception:
        store.close()
        raise
    return reader
