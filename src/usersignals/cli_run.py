"""The ``usersignals run`` command: the processor, from Kafka or the HTTP spool, until
stopped; with its health endpoint, and waiting for a networked store that is down at start.

Imported by :mod:`usersignals.cli`, whose ``app`` it joins.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from usersignals.app import build_processor
from usersignals.assembly import once_the_store_answers
from usersignals.cli import (
    ConfigOption,
    SignalsOption,
    StoreOption,
    _settings,
    _stop_on_signals,
    app,
    console,
)
from usersignals.config import Settings
from usersignals.listening import check_can_listen

if TYPE_CHECKING:
    from usersignals.app import Processor
    from usersignals.processing.batch import BatchReport
    from usersignals.processing.health import HealthServer
    from usersignals.processing.kafka_runner import KafkaRunner
    from usersignals.processing.metrics import ProcessorMetrics
    from usersignals.processing.pipeline import PipelineStats
    from usersignals.processing.runner import SpoolRunner


#: Where the processor's metrics and health endpoint listens unless ``--metrics-host``
#: says otherwise: loopback, as a port only the monitoring network should reach.
HEALTH_HOST = "127.0.0.1"


@app.command()
def run(
    store: StoreOption = None,
    spool: Annotated[
        str | None, typer.Option(help="The HTTP ingest spool directory [default: data/spool].")
    ] = None,
    kafka: Annotated[
        str | None,
        typer.Option(help="Kafka bootstrap servers: consume kafka.topic instead of the spool."),
    ] = None,
    topic: Annotated[str | None, typer.Option(help="Kafka topic [default: engagements].")] = None,
    metrics_port: Annotated[
        int,
        typer.Option(help="Serve Prometheus metrics on this port (0: off).", min=0, max=65_535),
    ] = 0,
    metrics_host: Annotated[
        str,
        typer.Option(help="The address --metrics-port listens on (0.0.0.0: every interface)."),
    ] = HEALTH_HOST,
    signals: SignalsOption = None,
    config: ConfigOption = None,
) -> None:
    """Run the processor until stopped: from Kafka when configured, else the HTTP spool.

    SIGTERM or Ctrl-C: the batch in hand is finished, written and committed, then exit 0.
    """
    from usersignals.malloc_tuning import return_large_blocks
    from usersignals.processing.gc_tuning import tune_collector

    stop = _stop_on_signals()  # first: a SIGTERM as the store opens exits 0, not 143
    return_large_blocks()  # before the store opens: RocksDB's freed write buffers leave
    settings = _run_settings(config, store, signals, spool, kafka, topic)
    # /metrics, /healthz and /readyz (503 while the store, a source or the broker is down),
    # from before the store opens: a processor waiting for Redis is alive, not ready.
    health = _health_server(metrics_host, metrics_port) if metrics_port else None
    built = _processor_once_the_store_answers(settings, stop, health)
    if built is None:  # stopped while waiting for the store
        return
    processor, metrics = built
    if health is not None:
        lookups = processor.engine.materializer
        health.holding = lambda: lookups is not None and bool(lookups.holding)
    # The runner owns the processor from here: leaving ``with`` closes the store, the
    # consumer and the dead-letter sink, whether the runner stopped or failed.
    runner, started = _runner(processor, metrics, health)
    tune_collector()  # last before running: freezes what was built (processing/gc_tuning.py)
    with runner:
        console.print(started, markup=False)
        runner.run(stop)
    console.print(
        _stopped(runner.stats, kafka=bool(settings.kafka.bootstrap_servers)), markup=False
    )


def _runner(
    processor: Processor, metrics: ProcessorMetrics, health: HealthServer | None
) -> tuple[KafkaRunner | SpoolRunner, str]:
    """`run`'s runner, from Kafka when configured, else the spool; and what it says first."""
    from usersignals.app import build_kafka_runner, build_spool_runner
    from usersignals.ingest.kafka import BrokerProbe

    settings = processor.settings
    if settings.kafka.bootstrap_servers:
        runner = build_kafka_runner(processor, metrics)
        if health is not None:
            probe, source = BrokerProbe(settings.kafka), runner.source
            health.not_ready_when += [
                ("broker_unavailable", lambda: not probe.reachable()),
                ("topic_missing", lambda: source.awaiting_topic),
            ]
        return runner, (
            f"consuming {settings.kafka.topic} from {settings.kafka.bootstrap_servers} "
            f"into {settings.store.where()}; stop with Ctrl-C"
        )
    return build_spool_runner(processor, metrics), (
        f"processing {settings.spool.path} into {settings.store.where()} "
        f"(signals: {settings.signals}); stop with Ctrl-C"
    )


def _processor_once_the_store_answers(
    settings: Settings, stop: threading.Event, health: HealthServer | None
) -> tuple[Processor, ProcessorMetrics] | None:
    """The processor and its metrics, once its store opens; ``None`` if ``stop`` is set
    first (see :func:`usersignals.assembly.once_the_store_answers`). Each try has metrics of
    its own: a try that failed after the Materializer registered its metrics (Redis answered
    the ping, then refused the first write) would otherwise register them twice."""
    from usersignals.processing.metrics import ProcessorMetrics

    def attempt() -> tuple[Processor, ProcessorMetrics]:
        metrics = ProcessorMetrics()
        metrics.set_store_available(False)  # until it opens: /readyz says store_unavailable
        if health is not None:
            health.watch(metrics)
        processor = build_processor(settings, metrics.registry)
        metrics.name_sources(processor.registry.lookup_sources)
        metrics.set_store_available(True)
        return processor, metrics

    return once_the_store_answers(settings, attempt, stop)


def _run_settings(
    config: Path | None,
    store: str | None,
    signals: str | None,
    spool: str | None,
    kafka: str | None,
    topic: str | None,
) -> Settings:
    """`run`'s settings: the configuration with its options over it."""
    overrides: dict[str, Any] = {"store": store, "signals": signals}
    if spool is not None:
        overrides["spool"] = {"path": spool}
    kafka_overrides = {"bootstrap_servers": kafka, "topic": topic}
    overrides["kafka"] = {k: v for k, v in kafka_overrides.items() if v is not None}
    return _settings(config, **overrides)


def _stopped(stats: PipelineStats, kafka: bool) -> str:
    rewound = stats.report.rewound
    taken = f", {rewound:,} below their users' progress taken as new" if rewound else ""
    common = (
        f"({stats.report.duplicates:,} already applied{taken}), "
        f"{stats.bad_said('dead letters' if kafka else 'bad')}, "
        f"{stats.report.repeats:,} repeated event ids dropped, "
        f"{stats.deleted_users:,} users deleted{_missing_enrichment(stats.report)}"
    )
    if kafka:
        return f"stopped: {stats.report.events:,} events in {stats.batches:,} batches {common}"
    report = stats.report
    applied = report.events - report.duplicates - report.repeats  # the rewound ones are applied
    return f"stopped: {stats.lines:,} lines, {applied:,} events applied {common}"


def _missing_enrichment(report: BatchReport) -> str:
    """The events applied with no record of their lookup key, for the stop line."""
    missing = {source: count for source, count in report.missing_enrichment.items() if count}
    if not missing:
        return ""
    by_source = ", ".join(f"{source}: {count:,}" for source, count in missing.items())
    return f", {sum(missing.values()):,} events with no enrichment record ({by_source})"


def _health_server(host: str, port: int) -> HealthServer:
    """The processor's health endpoint, started; it serves the metrics `run` hands it."""
    from usersignals.processing.health import HealthServer
    from usersignals.processing.metrics import ProcessorMetrics

    check_can_listen(host, port, "--metrics-port")
    return HealthServer(ProcessorMetrics(), host, port).start()
