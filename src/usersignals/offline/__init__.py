"""Offline: event archives, backfill from history, and point-in-time training data.

The same signal definitions and the same engine as the service, run over history.
"""

from usersignals.ingest.archive import EventArchive
from usersignals.offline.backfill import BackfillJob, BackfillSummary, backfill
from usersignals.offline.boundary import Boundary
from usersignals.offline.memory import MemoryStore

__all__ = [
    "BackfillJob",
    "BackfillSummary",
    "Boundary",
    "EventArchive",
    "MemoryStore",
    "backfill",
]
