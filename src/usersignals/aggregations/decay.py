"""Time buckets for decayed sums: exact integers per bucket, retention and ``as_of`` by bucket.

A decayed sum at time ``V`` is ``Σ w_i · 2^(-(V - t_i) / half_life)``. Each event adds the
integer ``round(w · 2^F · 2^((t - b) / h))`` to the cell of its *bucket* (``b`` the bucket's
start): integer addition is exact and associative, so the state does not depend on how the
events were batched, and the decay to ``V`` is applied when reading. A bucket is a UTC day,
or an hour / minute / second when 16 half-lives are shorter than that, so each term stays
below ``|w| · 2^(F + 16)``.

Buckets are what make retention and ``as_of`` exact:

- an answer at ``V`` counts the buckets from ``ceil(V - retention, bucket)`` on — nothing
  older than the retention counts (the edge is rounded *up* to a bucket);
- it counts the buckets up to the one holding ``V``; that last one only when none of its
  events is later than ``V`` (each bucket keeps its newest event time), else the read is
  refused with the earliest ``as_of`` it can answer (that newest time);
- the state keeps the buckets of the retention plus the ``as_of`` look-back before its newest
  event; an ``as_of`` whose retention reaches further back is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from usersignals.aggregations.context import AS_OF_LOOKBACK_MS, retention_start
from usersignals.durations import DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS
from usersignals.errors import AsOfError

#: A bucket spans at most this many half-lives (so each term's growth is below 2^16).
MAX_BUCKET_HALF_LIVES = 16
_SIZES = (DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS)

Tops = dict[int, int]  # bucket index -> the newest event time in it


@dataclass(frozen=True)
class DecayBuckets:
    half_life: int
    retention_ms: int

    @property
    def bucket_ms(self) -> int:
        longest = MAX_BUCKET_HALF_LIVES * self.half_life
        return next((size for size in _SIZES if size <= longest), SECOND_MS)

    def first_kept(self, newest: int) -> int:
        """The oldest bucket a state whose newest event is at ``newest`` keeps."""
        return retention_start(newest - AS_OF_LOOKBACK_MS, self.retention_ms, self.bucket_ms) // (
            self.bucket_ms
        )

    def growth(self, ts: int, bucket: int) -> float:
        """``2^((ts - bucket start) / half_life)``, in [1, 2^16] for the bucket holding ``ts``."""
        return float(2.0 ** ((ts - bucket * self.bucket_ms) / self.half_life))

    def decay_to(self, bucket: int, view_ms: int) -> float:
        """The factor that turns a bucket's sum into its value at ``view_ms``."""
        return float(2.0 ** ((bucket * self.bucket_ms - view_ms) / self.half_life))

    def counted(self, newest: int, tops: Tops, view_ms: int) -> tuple[int, int]:
        """The first and last bucket an answer at ``view_ms`` counts; raises AsOfError."""
        size = self.bucket_ms
        first = retention_start(view_ms, self.retention_ms, size) // size
        kept = self.first_kept(newest)
        if first < kept:
            earliest = (kept - 1) * size + self.retention_ms + 1
            raise AsOfError("", view_ms, earliest, "its retention reaches past the look-back")
        last = view_ms // size
        top = tops.get(last)
        if top is not None and top > view_ms:
            raise AsOfError("", view_ms, top, "events later than as_of share its bucket (UTC day)")
        return first, last
