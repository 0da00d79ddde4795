"""The ``usersignals serve`` command: the HTTP API's workers (granian), once the store is
there to read, with what they need prepared and checked first."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

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
    from usersignals.serving.reader import SignalReader


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [default: 127.0.0.1].")] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65_535, help="Port [default: 8080].")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes [default: 1].")
    ] = None,
    mode: Annotated[
        str | None, typer.Option(help="stateful (default) or raw (recompute, for comparison).")
    ] = None,
    store: StoreOption = None,
    signals: SignalsOption = None,
    spool: Annotated[str | None, typer.Option(help="The HTTP ingest spool directory.")] = None,
    kafka: Annotated[
        str | None,
        typer.Option(help="Kafka bootstrap servers: produce accepted events to kafka.topic."),
    ] = None,
    topic: Annotated[str | None, typer.Option(help="Kafka topic [default: engagements].")] = None,
    config: ConfigOption = None,
) -> None:
    """Serve the HTTP API (granian + Starlette) over the store the processor writes.

    Accepted events go to the spool (read by `usersignals run`), or with --kafka to the topic
    (read by `usersignals run --kafka`), acknowledged before the API answers 202.
    """
    from usersignals.serving.feature_log import check_feature_log_sink
    from usersignals.serving.raw import check_raw_events

    serving = {"host": host, "port": port, "workers": workers, "mode": mode, "signals": signals}
    settings = _serve_settings(config, store, serving, spool, kafka, topic)
    # Fail here, clearly, if there is no store or it holds other signals; wait for a Redis
    # that does not answer yet, as `run` does.
    stop = _stop_on_signals()
    reader = _serving_reader(settings, stop)
    if reader is None:  # stopped while waiting
        return
    try:
        if settings.serving.mode == "raw":
            check_raw_events(reader.registry, reader.store)  # else each worker fails on it
    finally:
        reader.store.close()
    check_feature_log_sink(settings)  # here, not in every worker's start
    _prepare_serving_places(settings)
    arguments = _granian_arguments(settings)
    accepted = settings.kafka.topic if settings.kafka.bootstrap_servers else settings.spool.path
    console.print(
        f"serving on http://{settings.serving.host}:{settings.serving.port} "
        f"({settings.serving.workers} worker(s), {settings.serving.mode}; events to "
        f"{accepted}); docs at /docs",
        markup=False,
    )
    if not stop.is_set():  # granian handles the signals from here
        os.execve(arguments[0], arguments, _serving_environment(settings, config))


def _serving_reader(settings: Settings, stop: threading.Event) -> SignalReader | None:
    """A reader of the store, for `serve`'s checks, once the store answers (``None`` if
    stopped first). While a networked store does not answer, a standby server answers
    health checks on the API's port (``serving/standby.py``): a liveness probe must not
    restart a server that is only waiting."""
    from usersignals.app import open_store_reader
    from usersignals.assembly import once_the_store_answers
    from usersignals.errors import StoreError
    from usersignals.serving.standby import Standby

    try:
        return open_store_reader(settings)
    except StoreError:
        if settings.store.backend == "rocksdb":
            raise  # a path or a lock to fix, not an outage to wait out
    with Standby(settings.serving.host, settings.serving.port):
        return once_the_store_answers(settings, lambda: open_store_reader(settings), stop)


def _prepare_serving_places(settings: Settings) -> None:
    """The spool directory made (every worker appends to it) and the ports checked free,
    before the workers start: one clear line here, not a failure in each worker."""
    if not settings.kafka.bootstrap_servers:
        Path(settings.spool.path).mkdir(parents=True, exist_ok=True)
    front = settings.serving
    check_can_listen(front.host, front.port, "serving.port")
    if front.metrics_port:
        check_can_listen(front.host, front.metrics_port, "serving.metrics_port")


def _serve_settings(
    config: Path | None,
    store: str | None,
    serving: dict[str, Any],
    spool: str | None,
    kafka: str | None,
    topic: str | None,
) -> Settings:
    """``serve``'s settings: the config file's, with the options given on the command line
    (``serving``'s ``signals``: the module)."""
    serving = dict(serving)
    overrides: dict[str, Any] = {"store": store, "signals": serving.pop("signals", None)}
    overrides["serving"] = {k: v for k, v in serving.items() if v is not None}
    if spool is not None:
        overrides["spool"] = {"path": spool}
    kafka_overrides = {"bootstrap_servers": kafka, "topic": topic}
    overrides["kafka"] = {k: v for k, v in kafka_overrides.items() if v is not None}
    return _settings(config, **overrides)


def _serving_environment(settings: Settings, config: Path | None) -> dict[str, str]:
    """The workers' environment: the settings as resolved here, so relative paths and
    command-line overrides mean the same in every worker."""
    environment = dict(os.environ)
    if config is not None:
        environment["USERSIGNALS_CONFIG"] = str(config.resolve())
    environment.update(
        {
            "USERSIGNALS_SIGNALS": _module_for_workers(settings.signals),
            "USERSIGNALS_STORE__PATH": str(Path(settings.store.path).resolve()),
            "USERSIGNALS_SPOOL__PATH": str(Path(settings.spool.path).resolve()),
            "USERSIGNALS_SERVING__MODE": settings.serving.mode,
            "USERSIGNALS_SERVING__ADMIN_TOKEN": settings.serving.admin_token,
            "USERSIGNALS_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "USERSIGNALS_KAFKA__TOPIC": settings.kafka.topic,
        }
    )
    return environment


def _module_for_workers(signals: str) -> str:
    """A module's file given by a relative path, made absolute; a dotted name as it is."""
    path = Path(signals)
    return str(path.resolve()) if signals.endswith(".py") and path.is_file() else signals


#: Seconds a serving worker has to stop on SIGTERM before granian kills it (its requests
#: are short; what it acknowledged is already durable).
WORKERS_KILL_TIMEOUT_S = 5


def _granian_arguments(settings: Settings) -> list[str]:
    import shutil

    granian = shutil.which("granian", path=str(Path(sys.executable).parent)) or "granian"
    arguments = [
        granian,
        "--interface", "asgi",
        "--factory",
        "--loop", "uvloop",
        "--host", settings.serving.host,
        "--port", str(settings.serving.port),
        "--workers", str(settings.serving.workers),
        # Closes connections whose headers stall; bodies are bounded in the app (408).
        "--http1-header-read-timeout", str(settings.serving.header_timeout_ms),
        # A worker that dies (OOM, SIGKILL) comes back; what it acknowledged is durable.
        "--respawn-failed-workers", "--respawn-interval", "0.5",
        # On SIGTERM, a worker that has not stopped after this many seconds is killed.
        # Without it granian waits for it forever, and a worker that missed the signal
        # kept the server up (tests/integration/test_serve_shutdown.py).
        "--workers-kill-timeout", str(WORKERS_KILL_TIMEOUT_S),
        "--log-level", "warning",
        "usersignals.worker:create",
    ]  # fmt: skip
    return arguments
