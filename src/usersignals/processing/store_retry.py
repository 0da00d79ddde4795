"""Retrying a state-store operation through an outage, with capped exponential backoff.

A store outage (Redis restarting, a failover, a network blip) must not stop the processor:
the batch in hand is simply written again once the store is back. Nothing is committed
meanwhile (Kafka offsets and spool marks are written or committed only after the state), so
the events behind it wait where they are. Every engine write is idempotent per user (progress
is written with the state), which is what makes writing a batch again safe.

While the store is failing, ``available`` is false: the processor's ``/readyz`` answers 503
and the ``usersignals_store_available`` gauge is 0.

The loop itself is :meth:`usersignals.backoff.Backoff.call`, the one retry loop of the
package; this class adds what a store outage needs around it: the stop event, the
availability flag and gauge, and one log line when the outage starts and one when it ends.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from usersignals.backoff import Backoff
from usersignals.errors import StoreError
from usersignals.processing.metrics import ProcessorMetrics

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Quick for a blip, at most five seconds between tries in a long outage.
STORE_BACKOFF_INITIAL_S = 0.05
STORE_BACKOFF_MAX_S = 5.0


class StoreRetry:
    """Calls an operation until it succeeds, or until ``stop`` is set (then re-raises).

    ``backoff`` paces the attempts; by default it waits on ``stop``, so a stop request
    ends a wait at once. An injected backoff (a test's fake clock and sleep) is used as is.
    """

    def __init__(
        self,
        stop: threading.Event | None = None,
        metrics: ProcessorMetrics | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.stop = stop or threading.Event()
        self.metrics = metrics
        self.backoff = backoff or Backoff(
            STORE_BACKOFF_INITIAL_S, STORE_BACKOFF_MAX_S, sleep=self._wait_unless_stopped
        )
        self.available = True
        self.failures = 0

    def call(self, operation: Callable[[], T], what: str) -> T:
        clock = self.backoff.clock
        down_since: list[float] = []  # set on the first failure of this call
        attempts = 0

        def failed(attempt: int, error: BaseException) -> None:
            nonlocal attempts
            attempts = attempt
            self.failures += 1
            self._set_available(False)
            if self.metrics is not None:
                self.metrics.store_failures.inc()
            if self.stop.is_set():
                raise error  # stopping while the store is down: nothing was committed
            if attempt == 1:
                down_since.append(clock())
                logger.warning("%s failed, retrying until the store is back: %s", what, error)

        result = self.backoff.call(operation, (StoreError,), on_retry=failed)
        if down_since:
            logger.warning(
                "%s succeeded after %d failed attempts (%.1f s)",
                what, attempts, clock() - down_since[0],
            )  # fmt: skip
        self._set_available(True)
        return result

    def _wait_unless_stopped(self, seconds: float) -> None:
        self.stop.wait(seconds)

    def _set_available(self, available: bool) -> None:
        self.available = available
        if self.metrics is not None:
            self.metrics.set_store_available(available)
