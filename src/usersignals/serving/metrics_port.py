"""``/metrics`` on a port of its own, so the API port can be exposed without it.

Every worker of ``usersignals serve`` binds the same port with ``SO_REUSEPORT`` (as granian
does for the API port), so a scrape is answered by one worker with that worker's metrics —
the same per-worker view ``/metrics`` gives on the API port. Any other path is a 404: a
health probe pointed here by mistake must fail, not pass on the metrics' 200 whatever the
API's state.
"""

from __future__ import annotations

import socket
import threading
from http.server import ThreadingHTTPServer
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import MetricsHandler

from usersignals.errors import ConfigurationError
from usersignals.processing.health import METRICS_PATH, not_found_body


class _SharedPortServer(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def _handler(registry: CollectorRegistry) -> type[MetricsHandler]:
    class _MetricsOnly(MetricsHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server names its handlers so)
            path = urlsplit(self.path).path
            if path == METRICS_PATH:
                super().do_GET()
                return
            body = not_found_body(path, METRICS_PATH)
            self.send_response(404)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    _MetricsOnly.registry = registry  # what prometheus_client's own factory sets
    return _MetricsOnly


class MetricsServer:
    """Serves ``registry`` at ``http://host:port/metrics`` from a background thread."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        try:
            self._server = _SharedPortServer((host, port), _handler(registry))
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
