"""Retrying a state-store operation through an outage, with capped exponential backoff.

A store outage (Redis restarting, a failover, a network blip) must not stop the processor:
the batch in hand is simply written again once the store is back. Nothing is committed
meanwhile (Kafka offsets and spool marks are written or committed only after the state), so
the events behind it wait where they are. Every engine write is idempotent per user (progress
is written with the state), which is what makes writing a batch again safe.

While the store is failing, ``available`` is false: the processor's ``/readyz`` answers 503
and the ``usersignals_store_available`` gauge is 0.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from usersignals.errors import StoreError
from usersignals.processing.metrics import ProcessorMetrics

logger = logging.getLogger(__name__)

T = TypeVar("T")


class StoreRetry:
    """Calls an operation until it succeeds, or until ``stop`` is set (then re-raises)."""

    def __init__(
        self,
        stop: threading.Event | None = None,
        metrics: ProcessorMetrics | None = None,
        base_s: float = 0.05,
        cap_s: float = 5.0,
    ) -> None:
        self.stop = stop or threading.Event()
        self.metrics = metrics
        self.base_s = base_s
        self.cap_s = cap_s
        self.available = True
        self.failures = 0

    def call(self, operation: Callable[[], T], what: str) -> T:
        attempt = 0
        down_since = 0.0
        while True:
            try:
                result = operation()
            except StoreError as exc:
                attempt += 1
                self.failures += 1
                if attempt == 1:
                    down_since = time.monotonic()
                    logger.warning("%s failed, retrying until the store is back: %s", what, exc)
                self._set_available(False)
                if self.metrics is not None:
                    self.metrics.store_failures.inc()
                # Capped backoff: quick for a blip, at most cap_s between tries in an outage.
                delay = min(self.cap_s, self.base_s * 2 ** min(attempt - 1, 16))
                if self.stop.wait(delay):
                    raise  # stopping while the store is down: nothing was committed
                continue
            if attempt:
                logger.warning(
                    "%s succeeded after %d failed attempts (%.1f s)",
                    what, attempt, time.monotonic() - down_since,
                )  # fmt: skip
            self._set_available(True)
            return result

    def _set_available(self, available: bool) -> None:
        self.available = available
        if self.metrics is not None:
            self.metrics.set_store_available(available)
