"""``/metrics`` on a port of its own, so the API port can be exposed without it.

Every worker of ``usersignals serve`` binds the same port with ``SO_REUSEPORT`` (as granian
does for the API port), so a scrape is answered by one worker with that worker's metrics —
the same per-worker view ``/metrics`` gives on the API port.
"""

from __future__ import annotations

import socket
import threading
from http.server import ThreadingHTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import MetricsHandler

from usersignals.errors import ConfigurationError


class _SharedPortServer(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class MetricsServer:
    """Serves ``registry`` at ``http://host:port/metrics`` from a background thread."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        try:
            self._server = _SharedPortServer((host, port), MetricsHandler.factory(registry))
        except OSError as exc:
            raise ConfigurationError(f"serving.metrics_port {port}: cannot listen: {exc}") from exc
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
