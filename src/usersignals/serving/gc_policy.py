"""The garbage-collection policy of a serving worker: keep collection pauses out of requests.

Why: a full (old-generation) collection walks every tracked object of the process — the
signal registry, compiled plans, imported modules, the decoded-state cache — and CPython
starts one whenever enough objects have survived, which under load means in the middle of
some request, adding milliseconds to its latency. The policy:

1. **freeze** the heap once the worker is built (``gc.freeze``): everything that exists at
   start-up moves to the permanent generation, which no collection walks again — and again
   after each timed full collection (below), so the survivors (the decoded-state cache,
   mostly) are not walked over and over. The cost, accepted: a reference cycle among frozen
   objects that later becomes garbage is never reclaimed (acyclic ones, like cached states,
   are freed by reference counting as usual);
2. raise the young-generation threshold (``young_threshold``): young collections stay
   automatic — they only walk objects allocated since the last one — but run less often;
3. with ``full_interval_ms`` > 0, never start an old-generation collection automatically:
   run a full collection after a response has been sent, when no other request of this
   worker is in flight, at most once per interval — or, when the worker is never idle, after
   twice the interval, still between a response and the next request's handling.

``usersignals_gc_pause_seconds`` (by generation and whether a request was in flight) shows
where the pauses land, and ``usersignals_gc_frozen_objects`` that the heap was frozen.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from usersignals.config import GcSettings

# Large enough that the count of young (resp. middle) collections never reaches it between
# two timed full collections: automatic old-generation collection is off.
NEVER = 1_000_000_000
# CPython's own defaults for the older generations, kept when the timed collection is off.
PYTHON_DEFAULT_OLDER = (10, 10)


class GcPolicy:
    """Applies ``settings`` to this process's collector and runs the timed full collections."""

    def __init__(self, settings: GcSettings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.interval_s = settings.full_interval_ms / 1000
        self.in_flight = 0
        self.last_full = time.monotonic()
        self._started = 0.0
        self.pauses = Histogram(
            "usersignals_gc_pause_seconds",
            "Garbage-collection pauses, by generation and whether a request was in flight",
            ["generation", "in_request"],
            buckets=(0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
            registry=registry,
        )
        frozen = Gauge(
            "usersignals_gc_frozen_objects",
            "Objects in the permanent generation (frozen after start-up)",
            registry=registry,
        )
        frozen.set_function(gc.get_freeze_count)

    def start(self) -> None:
        """Set the thresholds and freeze what exists now (call once the worker is built)."""
        older = (NEVER, NEVER) if self.interval_s > 0 else PYTHON_DEFAULT_OLDER
        gc.set_threshold(self.settings.young_threshold, *older)
        if self.settings.freeze:
            gc.collect()  # what is garbage now is not frozen for life
            gc.freeze()
        gc.callbacks.append(self._observe)

    def stop(self) -> None:
        if self._observe in gc.callbacks:
            gc.callbacks.remove(self._observe)

    def after_request(self) -> None:
        """A response was sent: run the due full collection, if the worker is idle enough."""
        if self.interval_s <= 0:
            return
        waited = time.monotonic() - self.last_full
        if waited >= 2 * self.interval_s or (waited >= self.interval_s and not self.in_flight):
            gc.collect()
            if self.settings.freeze:
                # What survived a full collection is long-lived (cached states, mostly): out
                # of the next ones too, so each walks only what is newer — measured: a full
                # collection over a warm 1,000-user state cache took ~140 ms, a pause the
                # event loop's other requests would wait through.
                gc.freeze()
            self.last_full = time.monotonic()

    def _observe(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        in_request = "yes" if self.in_flight else "no"
        self.pauses.labels(str(info["generation"]), in_request).observe(
            time.perf_counter() - self._started
        )


class BetweenRequests:
    """ASGI middleware: counts the requests in flight and, after each, lets the policy
    collect (the response has been handed to the server by then)."""

    def __init__(self, app: ASGIApp, policy: GcPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.policy.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.policy.in_flight -= 1
            self.policy.after_request()


def install_gc_policy(
    app: Starlette, settings: GcSettings, registry: CollectorRegistry
) -> GcPolicy:
    """Apply the policy to this worker process, once its app is built."""
    policy = GcPolicy(settings, registry)
    app.add_middleware(BetweenRequests, policy=policy)
    policy.start()
    return policy
