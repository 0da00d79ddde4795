"""Naming the user records written larger than ``processing.large_record_bytes``.

A record holds each of its user's signal states and the fingerprints of the event ids the
user applied within the dedupe horizon, 4 bytes each (processing/dedupe.py), and it is read,
decoded, encoded and written whole in every batch that has an event of the user. A user with
hundreds of thousands of events within the horizon (a bot, a load test under one id) thus
costs the processor in every batch more than thousands of ordinary users: in the freshness
feed of bench/ingest.py, whose top user sends about 4,200 events a second, that record
reached 1 MB in a minute and the processor's rate fell from 63,000 to 49,000 events/s with
it. So records over the limit are counted (``usersignals_large_records_total``) and the
largest is named in a warning, at most once a minute.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from usersignals.state.keys import USER_PREFIX

logger = logging.getLogger(__name__)

#: The default limit: about 260,000 fingerprints, or 60 times a full LastN(500) of four fields.
DEFAULT_LIMIT_BYTES = 1 << 20


class LargeRecords:
    """Counts the records of a batch over ``limit_bytes`` (0: off) and says so."""

    EVERY_S = 60.0

    def __init__(self, limit_bytes: int = DEFAULT_LIMIT_BYTES) -> None:
        self.limit_bytes = limit_bytes
        self._said_at = -self.EVERY_S
        self._unsaid = 0
        self._largest: tuple[str, int] = ("", 0)

    def check(self, records: Mapping[bytes, bytes]) -> tuple[int, tuple[str, int] | None]:
        """How many of a batch's ``records`` are over the limit, and the largest (user id,
        bytes), ``None`` when none is. One pass in C when none is (the usual case)."""
        if not self.limit_bytes or not records:
            return 0, None
        if max(map(len, records.values())) <= self.limit_bytes:
            return 0, None
        over = {key: len(value) for key, value in records.items() if len(value) > self.limit_bytes}
        key = max(over, key=over.__getitem__)
        largest = (key.removeprefix(USER_PREFIX).decode(errors="replace"), over[key])
        self._say(len(over), largest)
        return len(over), largest

    def _say(self, count: int, largest: tuple[str, int]) -> None:
        self._unsaid += count
        if largest[1] > self._largest[1]:
            self._largest = largest
        if time.monotonic() - self._said_at < self.EVERY_S:
            return
        user, size = self._largest
        logger.warning(
            "%d user records written since the last word were larger than "
            "processing.large_record_bytes (%d bytes); the largest: user %r, %d bytes. A "
            "record is rewritten whole in every batch with an event of its user, and it grows "
            "with the user's events within processing.dedupe_horizon_ms (4 bytes each): a user "
            "with that many (a bot?) slows the processor; a shorter horizon bounds it",
            self._unsaid, self.limit_bytes, user, size,
        )  # fmt: skip
        self._said_at, self._unsaid, self._largest = time.monotonic(), 0, ("", 0)
