"""The hot read route's 200 answers, without Starlette's routing and middleware stack.

``GET /v1/users/{user_id}/signals`` is most of a worker's traffic. Measured in-process
(bench/serving_handler.py), Starlette's middleware and routing were about a third of its
cost. This fast path runs first, for every request. It answers only the requests that it can
answer exactly as the full stack would. For those it does what the route and the middlewares
do for a 200 answer:
- the same guards: the read token, the user id's length, the writer check;
- the same body, from ``reader.read_body`` on the query cached per query string;
- the same headers;
- the request metrics and the GC policy's bookkeeping.

Every other request goes to the full stack, untouched, with nothing sent: another route or
method, a missing or wrong token, a bad user id, a store being written with other signals,
reads that run on the read thread (stores over the network), a query or read that raises,
and a read that the core leaves to the object path. The full stack runs it from the start
and answers as before, so every error answer still comes from one place (a failed read is
tried a second time there). A request the feature log samples goes there too, with the
draw recorded in its scope (:data:`SAMPLED`), so it is drawn once.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING

from starlette._utils import get_route_path
from starlette.types import Scope, Send

from usersignals.serving.guards import bearer_of, given_token_problem
from usersignals.serving.inputs import path_is_utf8
from usersignals.serving.reader import valid_user_id
from usersignals.serving.route_series import CounterSeries, HistogramSeries
from usersignals.serving.state import ServingState

if TYPE_CHECKING:
    from usersignals.serving.gc_policy import GcPolicy

#: The scope key holding the feature log's draw for a request the fast path handed over.
SAMPLED = "usersignals.feature_log_sampled"
#: The route's name: its metrics' label.
ROUTE = "user_signals"
#: The route's count of 200s, their latency, their time to the answer built.
_Series = tuple[CounterSeries, HistogramSeries, HistogramSeries]
#: The content type Starlette's JSON ``Response`` sends (the tuple shared by every answer).
_CONTENT_TYPE = (b"content-type", b"application/json")


class FastRead:
    """The 200 answers of the route matched by ``path`` (the route's own compiled pattern)."""

    def __init__(self, state: ServingState, path: re.Pattern[str], read_token: str) -> None:
        self.state = state
        self.path = path
        self.read_token = read_token
        #: The worker's GC policy (``install_gc_policy``); ``None``: no policy installed.
        self.policy: GcPolicy | None = None
        # The route's 200 series (its count, latency and time to the answer built), found
        # at the first answer (not before: /metrics shows a series once it has counted
        # one) and kept: looking them up by labels was about a tenth of a microsecond each.
        self._series: _Series | None = None

    async def answer(self, scope: Scope, send: Send) -> bool:
        """Answer ``scope`` if it is the route's and its answer a 200; ``False``: nothing
        was sent, the full stack answers it."""
        if scope["type"] != "http" or scope["method"] != "GET":
            return False
        match = self.path.match(get_route_path(scope))
        if match is None:
            return False
        started = time.perf_counter()
        policy = self.policy
        if policy is not None:
            policy.in_flight += 1
        body = None
        try:
            body = self._body(scope, match["user_id"])
            if body is None:
                return False
            series = self._series or self._first_series()
            series[2].observe(time.perf_counter() - started)
            await self._send(body, send, started, series)
            return True
        finally:
            if policy is not None:
                policy.in_flight -= 1
                if body is not None:  # answered: the response is with the server
                    policy.after_request()

    def _body(self, scope: Scope, user_id: str) -> bytes | None:
        """The 200 answer's body, or ``None``: the full stack answers."""
        state = self.state
        if self.read_token and not self._authorized(scope):
            return None
        if not valid_user_id(user_id, state.max_user_id_chars) or state.reads.offload:
            return None
        if not path_is_utf8(scope, user_id):
            return None
        # The route's order: the query, the writer, then the feature log's draw.
        try:
            query = state.queries.get(scope["query_string"])
        except Exception:  # the full stack answers it, from the same error
            return None
        if state.writer is not None and state.writer.problem is not None:
            return None
        log = state.feature_log
        if log is not None:
            # Recorded either way: a request handed over for another reason must not be
            # drawn again by the route (that logged 1-(1-r)^2 of them).
            scope[SAMPLED] = log.sampled()
            if scope[SAMPLED]:  # the logged answer needs the objects: the route's path
                return None
        try:
            return state.reader.read_body(user_id, query, time.time_ns() // 1_000_000)
        except Exception:  # as above
            return None

    def _authorized(self, scope: Scope) -> bool:
        header = None
        for name, value in scope["headers"]:
            if name == b"authorization":  # the first, as Starlette's ``headers.get``
                header = value.decode("latin-1")
                break
        return given_token_problem(bearer_of(header), self.read_token, "read") is None

    def _first_series(self) -> _Series:
        http = self.state.http
        self._series = (*http.answer_series(ROUTE, 200), http.built.labels(ROUTE))
        return self._series

    async def _send(self, body: bytes, send: Send, started: float, series: _Series) -> None:
        # The headers Starlette's ``Response(body, media_type="application/json")`` sends.
        headers = [(b"content-length", str(len(body)).encode()), _CONTENT_TYPE]
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        except asyncio.CancelledError:
            # As the request metrics count it: the client went away.
            self.state.http.client_disconnects.labels(ROUTE).inc()
            raise
        except BaseException:
            _answered(series, started)
            raise
        _answered(series, started)


def _answered(series: _Series, started: float) -> None:
    """What ``HttpMetrics.answered`` records for a 200 of the route."""
    series[0].inc()
    series[1].observe(time.perf_counter() - started)
