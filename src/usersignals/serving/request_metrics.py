"""Per-route request counts, latencies and client disconnects: an ASGI middleware.

It wraps the app's exception handlers, so it sees every answer's final status. A request
that matches no route is not counted (a scanner must not create label values).
"""

from __future__ import annotations

import asyncio
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from usersignals.serving.error_handlers import CLIENT_CLOSED
from usersignals.serving.state import HttpMetrics


class RequestMetrics:
    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless an answer starts

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                name = getattr(scope.get("route"), "name", None)
                if name is not None:
                    self.metrics.answer_built(name, time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except asyncio.CancelledError:
            # The client went away while its answer was read off the loop: the server
            # cancels the request. Counted apart, and the cancellation goes on.
            status = CLIENT_CLOSED
            raise
        finally:
            self._record(scope, status, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        name = getattr(route, "name", None)
        if name is None:
            return
        if status == CLIENT_CLOSED:
            self.metrics.client_disconnects.labels(name).inc()
            return
        self.metrics.answered(name, status, seconds)
