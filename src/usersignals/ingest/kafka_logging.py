"""librdkafka's own log, through Python logging, each kind of line at most once a minute.

Left to itself, librdkafka writes to stderr: with no broker at the address (a typo, an
outage) it said "Connect ... failed: Connection refused" about twenty times a second per
client (118 lines in 6 s from one processor), where the project's own warnings say an outage
once a minute. Every client the project makes (consumers, producers, admin clients) logs
through :func:`client_logger` instead: the ``usersignals.kafka.client`` logger, whose filter
lets each kind of line through once a minute (a kind: the line with its numbers blanked,
so the same failure on another port or after another delay is the same kind).
"""

from __future__ import annotations

import logging
import re
import threading
import time

#: How long the same kind of line stays quiet once said.
QUIET_S = 60.0
_NUMBERS = re.compile(r"\d+")


class OncePerInterval(logging.Filter):
    """Passes each kind of record at most once per ``interval_s``."""

    def __init__(self, interval_s: float = QUIET_S) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._said: dict[tuple[int, str], float] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.levelno, _NUMBERS.sub("#", record.getMessage()))
        now = time.monotonic()
        with self._lock:
            said = self._said.get(kind)
            if said is not None and now - said < self.interval_s:
                return False
            if len(self._said) > 10_000:  # kinds are few; a flood of new ones must not grow it
                self._said.clear()
            self._said[kind] = now
        return True


_logger = logging.getLogger("usersignals.kafka.client")
_logger.addFilter(OncePerInterval())


def client_logger() -> logging.Logger:
    """The logger to give a librdkafka client (its ``logger`` property)."""
    return _logger
