"""Answering health checks while ``serve`` waits for its store.

``serve`` opens its store before its workers start (a store that holds other signals is
refused there, in one line), and waits while a networked store does not answer: a Redis
outage at start. Nothing listened meanwhile, so a liveness probe's ``/healthz`` was refused
and a supervisor restarted a server that was only waiting. While it waits, a standby server
answers on the API's port: ``/healthz`` 200, as a live server does, and every other request
``503 store_unavailable`` with a ``Retry-After``, as a read during an outage is answered. It
stops before the workers take the port (both listen with ``SO_REUSEADDR``, so its closed
connections do not hold the port).
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from usersignals.errors import ConfigurationError

#: Seconds a client is told to wait before it asks again.
RETRY_AFTER_S = 1
_UNAVAILABLE = {
    "error": "store_unavailable",
    "message": "the server is waiting for its state store to answer",
}


class _Handler(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        alive = self.path.split("?", 1)[0] == "/healthz"
        body = json.dumps({"status": "ok"} if alive else _UNAVAILABLE).encode()
        self.send_response(200 if alive else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if not alive:
            self.send_header("Retry-After", str(RETRY_AFTER_S))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    # The base handler calls do_<METHOD>: every method gets the same answer.
    def do_GET(self) -> None:
        self._answer()

    def do_HEAD(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def do_DELETE(self) -> None:
        self._answer()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: a probe every few seconds is not news."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a slow client never holds the hand-over to the workers

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily) -> None:
        self.address_family = family  # the host's (an IPv6 one too), read as it binds
        super().__init__(address, _Handler)


class Standby:
    """``with Standby(host, port):`` answers on ``host:port`` until the block ends."""

    def __init__(self, host: str, port: int) -> None:
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
            self._server = _Server((host, port), family)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConfigurationError(
                f"serving.port {port}: cannot listen on {host}: {reason}"
            ) from None
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="usersignals-standby", daemon=True
        )

    def __enter__(self) -> Standby:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
