"""What a serving worker holds, and how a handler reaches it.

The composition root builds one :class:`ServingState` per worker; the app keeps it in
``app.state.serving`` and every handler, exception handler and the request metrics read it
from there: handlers are plain functions of the request.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.requests import Request

from usersignals.events.decode import EventDecoder
from usersignals.ingest.accepted import AcceptedLog
from usersignals.ingest.dead_letter import DeadLetterFile
from usersignals.serving.feature_log import FeatureLog
from usersignals.serving.guards import FrontDoor, StoreReads
from usersignals.serving.identity import WriterCheck
from usersignals.serving.queries import Queries
from usersignals.serving.reader import Reader
from usersignals.serving.route_series import (
    CounterSeries,
    HistogramSeries,
    RequestCounter,
    RequestHistogram,
)
from usersignals.signals.registry import SignalRegistry

#: Batch requests a worker reads at once (the event loop takes turns between their slices).
BATCHES_AT_ONCE = 2


@dataclass
class ServingState:
    """Everything a serving worker holds; built by the composition root."""

    registry: SignalRegistry
    #: The stateful reader, or the raw recomputer (``serving.mode = "raw"``): one interface.
    reader: Reader
    decoder: EventDecoder
    #: Where accepted events and deletions go before the 2xx: the spool, or Kafka.
    log: AcceptedLog
    dead_letters: DeadLetterFile
    admin_token: str = ""
    refresh_interval_s: float = 0.1
    #: A sample of the answers, logged for the online/offline consistency check.
    feature_log: FeatureLog | None = None
    last_refresh: float = field(default_factory=time.monotonic)
    metrics: CollectorRegistry = field(default_factory=CollectorRegistry)
    front: FrontDoor = field(default_factory=FrontDoor)
    #: None: do not watch which signals write the store (e.g. a test over a bare store).
    writer: WriterCheck | None = None

    def __post_init__(self) -> None:
        self.reads = StoreReads(self.front.read_timeout_s, self.front.offload_reads)
        #: Batch reads a worker runs at once; the others wait their turn, so requests queued
        #: behind them (``/healthz`` among them) wait for a few slices of users, not for every
        #: batch (see ``read_routes.batch``).
        self.batch_slots = asyncio.Semaphore(BATCHES_AT_ONCE)
        self.queries = Queries(self.registry)
        self.http = HttpMetrics(self.metrics)

    @property
    def max_user_id_chars(self) -> int:
        """The longest user id ingest accepts (``events.max_user_id_chars``): reads refuse
        longer ones too, so a read can never ask for a user no event can create."""
        return self.decoder.policy.max_user_id_chars


class HttpMetrics:
    """The API's Prometheus series, in the worker's own registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.client_disconnects = Counter(
            "usersignals_http_client_disconnects",
            "Requests whose client went away before they were answered, by route",
            ["route"],
            registry=registry,
        )
        # Recorded on every request: series cheaper to record than prometheus_client's,
        # exposed as those are (serving/route_series.py).
        self.requests = RequestCounter(
            "usersignals_http_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=registry,
        )
        self.latency = RequestHistogram(
            "usersignals_http_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=registry,
        )
        # The handler's own cost, apart from the server's sending, during which the event
        # loop runs other requests' work: from the request reaching the app to its answer
        # built, taken when the answer starts.
        self.built = RequestHistogram(
            "usersignals_http_answer_built_seconds",
            "Time from a request reaching the app to its answer built (before the server "
            "sends it), by route",
            ["route"],
            buckets=(1e-5, 2e-5, 3e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 0.001, 0.005, 0.025, 0.1),
            registry=registry,
        )
        self.events_accepted = Counter(
            "usersignals_http_events_accepted", "Events accepted over HTTP", registry=registry
        )
        self.events_refused = Counter(
            "usersignals_http_events_refused",
            "Requests to ingest refused with 503, by reason (backlog_full, disk_full, ...)",
            ["reason"],
            registry=registry,
        )
        self.backlog = Gauge(
            "usersignals_ingest_backlog_bytes",
            "Spooled bytes not yet applied by the processor, as of the last ingest request or "
            "readiness probe (0 in Kafka mode)",
            registry=registry,
        )
        self.events_rejected = Counter(
            "usersignals_http_events_rejected",
            "Events rejected over HTTP, by reason",
            ["reason"],
            registry=registry,
        )

    def answered(self, route: str, status: int, seconds: float) -> None:
        """Count an answer of ``route`` and its latency."""
        requests, latency = self.answer_series(route, status)
        requests.inc()
        latency.observe(seconds)

    def answer_series(self, route: str, status: int) -> tuple[CounterSeries, HistogramSeries]:
        """``route``'s count of ``status`` answers and its latency: what :meth:`answered`
        records, for a caller that keeps them (the read route's fast path)."""
        return self.requests.labels(route, str(status)), self.latency.labels(route)

    def answer_built(self, route: str, seconds: float) -> None:
        """The time ``route`` took to build an answer, before it was sent."""
        self.built.labels(route).observe(seconds)


def serving_state(request: Request) -> ServingState:
    """The worker's state, as the app factory stored it."""
    state: ServingState = request.app.state.serving
    return state


def worker_name() -> str:
    return f"worker-{os.getpid()}"
