"""Capped exponential backoff: the one retry delay used wherever usersignals retries.

A component that retries takes a :class:`Backoff` and asks it for the delay of each attempt,
or lets it sleep. The clock and the sleep are injectable, so tests run a retry loop of minutes
in microseconds and check the delays exactly, with no wall-clock waiting.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Delays ``initial_s * factor ** (attempt - 1)``, capped at ``max_s``.

    ``attempt`` counts failures so far, from 1. No jitter by default: the callers retry one
    resource each, not a crowd of clients against one server.
    """

    initial_s: float = 0.05
    max_s: float = 2.0
    factor: float = 2.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    def __post_init__(self) -> None:
        if self.initial_s < 0 or self.max_s < self.initial_s or self.factor < 1:
            raise ValueError(
                "backoff needs 0 <= initial_s <= max_s and factor >= 1, got "
                f"initial_s={self.initial_s}, max_s={self.max_s}, factor={self.factor}"
            )

    def delay(self, attempt: int) -> float:
        """The wait after the ``attempt``-th failure (1 for the first)."""
        if attempt < 1 or self.initial_s == 0:
            return 0.0
        # Compared in logarithms: the power itself overflows a float after enough attempts
        # (a source held for hours under "hold").
        steps = attempt - 1
        if steps * math.log(self.factor) >= math.log(self.max_s / self.initial_s):
            return self.max_s
        return float(self.initial_s * self.factor**steps)

    def wait(self, attempt: int) -> float:
        """Sleep the delay of ``attempt`` (with the injected sleep); returns the delay."""
        seconds = self.delay(attempt)
        if seconds > 0:
            self.sleep(seconds)
        return seconds

    def call(
        self,
        operation: Callable[[], T],
        retry_on: tuple[type[BaseException], ...],
        attempts: int | None = None,
        budget_s: float | None = None,
        on_retry: Callable[[int, BaseException], None] | None = None,
    ) -> T:
        """Run ``operation`` until it returns, retrying only the ``retry_on`` errors.

        Gives up, re-raising the last error, after ``attempts`` calls or once ``budget_s``
        has passed on the clock (``None``: no limit). Any other error propagates at once: a
        bug is not retried. ``on_retry(attempt, error)`` runs before each wait.
        """
        started = self.clock()
        attempt = 0
        while True:
            try:
                return operation()
            except retry_on as exc:
                attempt += 1
                out_of_attempts = attempts is not None and attempt >= attempts
                out_of_time = budget_s is not None and self.clock() - started >= budget_s
                if out_of_attempts or out_of_time:
                    raise
                if on_retry is not None:
                    on_retry(attempt, exc)
                self.wait(attempt)
