"""The processor's own small HTTP endpoint: ``/metrics``, ``/healthz`` and ``/readyz``.

``/readyz`` answers 503 while the state store is failing (its writes are being retried), a
lookup source's failure is held, or (consuming from Kafka) no broker answers or the topic
does not exist yet, so an orchestrator can see the processor is waiting, not dead;
``/healthz`` stays 200 as long as the process runs, so nothing restarts a processor that is
only waiting for its store.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import msgspec
from prometheus_client import make_wsgi_app

from usersignals.processing.metrics import ProcessorMetrics

_encode = msgspec.json.Encoder().encode


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds would flood stderr; metrics count what matters."""


#: The metrics' path on a metrics port (the processor's, and the API's own when it has one).
METRICS_PATH = "/metrics"


def not_found_body(path: str, served: str) -> bytes:
    """A metrics port's 404: the path asked for, and what the port serves."""
    return f"no {path} on this port: it serves {served}\n".encode()


class HealthServer:
    """Serves the processor's metrics and readiness on ``host:port`` in a daemon thread."""

    def __init__(
        self,
        metrics: ProcessorMetrics,
        host: str,
        port: int,
        holding: Callable[[], bool] = lambda: False,
    ) -> None:
        self.metrics = metrics
        #: True while a lookup source's failure is held (often the same store, down); set
        #: once the processor is built (the server answers while `run` waits for its store).
        self.holding = holding
        #: More reasons not to be ready, in order: (the status /readyz names, whether it
        #: holds now). The Kafka runner adds its own (``cli_run.py``'s ``_runner``).
        self.not_ready_when: list[tuple[str, Callable[[], bool]]] = []
        self._metrics_app = make_wsgi_app(metrics.registry)
        self._server: WSGIServer = make_server(host, port, self._app, handler_class=_QuietHandler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="processor-health", daemon=True
        )

    def watch(self, metrics: ProcessorMetrics) -> None:
        """Serve ``metrics`` from now on: each try of `run` to open its store has its own."""
        self.metrics = metrics
        self._metrics_app = make_wsgi_app(metrics.registry)

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def _app(self, environ: dict[str, Any], respond: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            return _json(respond, "200 OK", {"status": "ok"})
        if path == "/readyz":
            if not self.metrics.store_up:
                return _json(respond, "503 Service Unavailable", {"status": "store_unavailable"})
            if self.holding():
                return _json(respond, "503 Service Unavailable", {"status": "source_unavailable"})
            for status, holds in self.not_ready_when:
                if holds():
                    return _json(respond, "503 Service Unavailable", {"status": status})
            return _json(respond, "200 OK", {"status": "ready"})
        if path != METRICS_PATH:  # a 404, not the metrics: a probe of a wrong path must fail
            body = not_found_body(path, f"{METRICS_PATH}, /healthz and /readyz")
            respond("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [body]
        result: Iterable[bytes] = self._metrics_app(environ, respond)
        return result

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _json(respond: Callable[..., Any], status: str, body: dict[str, str]) -> list[bytes]:
    payload = _encode(body)
    respond(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]
