"""Where the API puts an accepted write before it answers 2xx: the spool, or a Kafka topic.

Both are durable before the answer and both refuse (``IngestUnavailableError`` → 503 with
``Retry-After``) rather than accept what they cannot keep. The spool bounds its backlog — the
bytes written but not yet applied by the processor — and the free space of its disk.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import msgspec

from usersignals.errors import IngestUnavailableError, SpoolWriteError
from usersignals.events.model import Event
from usersignals.ingest.spool import SpoolWriter, spool_files

logger = logging.getLogger(__name__)

_encode_event = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class LogStatus:
    """Whether the log takes writes now; ``reason`` says why not. For ``/readyz``."""

    ready: bool
    reason: str = "ready"
    backlog_bytes: int = 0


class AcceptedLog(Protocol):
    """A durable, ordered path for accepted events and deletions."""

    def check(self) -> LogStatus:
        """The status; raises :class:`IngestUnavailableError` if a write now would be refused.

        May read the store (the spool's progress): call it off the event loop."""

    def append_events(self, events: Sequence[Event]) -> None:
        """Durable when this returns; raises :class:`IngestUnavailableError` otherwise."""

    def delete_user(self, user_id: str) -> None:
        """Queue a deletion behind every event of the user accepted before it."""

    def status(self) -> LogStatus: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SpoolLimits:
    #: Refuse events once this many spooled bytes are not yet applied by the processor.
    max_backlog_bytes: int
    #: Refuse events when the spool's filesystem has less free space than this.
    min_free_bytes: int
    #: What 503 answers send as ``Retry-After``, and how long a failed write keeps the
    #: worker not-ready.
    retry_after_s: int = 5


class SpoolLog:
    """The spool as the accepted-write path, with its backlog bounded.

    ``applied`` maps spool partitions to the byte offset the processor has applied (read from
    the store), so the backlog is what is written but not applied — not what an operator has
    yet to delete. The directory is scanned at most every ``scan_interval_s``.
    """

    def __init__(
        self,
        writer: SpoolWriter,
        limits: SpoolLimits,
        applied: Callable[[list[str]], list[int]],
        scan_interval_s: float = 0.25,
    ) -> None:
        self.writer = writer
        self.limits = limits
        self._applied = applied
        self._scan_interval_s = scan_interval_s
        self._scanned_at = -1e9
        self._backlog = 0
        self._free = 0
        self._failed_at = -1e9
        self._failure = ""
        self._lock = threading.Lock()

    def _scan(self) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._scanned_at < self._scan_interval_s:
                return
            self._scanned_at = now
        sizes = spool_files(self.writer.directory)
        partitions = sorted(sizes)
        try:
            offsets = self._applied(partitions) if partitions else []
        except Exception as exc:  # the store is unreachable: count everything as pending
            logger.warning("cannot read spool progress: %s", exc)
            offsets = [0] * len(partitions)
        self._backlog = sum(max(sizes[p] - o, 0) for p, o in zip(partitions, offsets, strict=True))
        stats = os.statvfs(self.writer.directory)
        self._free = stats.f_bavail * stats.f_frsize

    def status(self) -> LogStatus:
        self._scan()
        limits = self.limits
        if time.monotonic() - self._failed_at < limits.retry_after_s:
            return LogStatus(False, self._failure, self._backlog)
        if self._free < limits.min_free_bytes:
            return LogStatus(False, "disk_full", self._backlog)
        if self._backlog > limits.max_backlog_bytes:
            return LogStatus(False, "backlog_full", self._backlog)
        return LogStatus(True, "ready", self._backlog)

    def check(self) -> LogStatus:
        status = self.status()
        if status.reason in ("backlog_full", "disk_full"):
            raise IngestUnavailableError(
                status.reason,
                f"the ingest spool cannot take more events now ({status.reason.replace('_', ' ')}"
                f", {status.backlog_bytes:,} bytes not yet applied); retry later",
                self.limits.retry_after_s,
            )
        return status

    def append_events(self, events: Sequence[Event]) -> None:
        self.check()
        self._append([_encode_event(event) for event in events])

    def delete_user(self, user_id: str) -> None:
        # Not held back by the backlog bound: a deletion is small and must not wait behind it.
        self._append([self.writer.deletion_line(user_id)])

    def _append(self, lines: list[bytes]) -> None:
        try:
            self.writer.append(lines)
        except SpoolWriteError as exc:
            self._failed_at = time.monotonic()
            self._failure = "disk_full" if exc.reason == "disk_full" else "spool_error"
            logger.error("%s", exc)
            raise IngestUnavailableError(
                self._failure, f"the event was not accepted: {exc}", self.limits.retry_after_s
            ) from exc
        with self._lock:  # count our own write until the next scan
            self._backlog += sum(len(line) + 1 for line in lines)

    def close(self) -> None:
        self.writer.close()
