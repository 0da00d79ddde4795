"""Time tiles: the multi-resolution bucket layout behind every windowed aggregation.

Recent events sit in fine buckets, older ones in coarser ones, so any window up to the
retention is answered from a few buckets while a user's state stays small. A layout is a list
of tiers ``(resolution, span)``, finest first. With ``M`` the newest event time of the state,
tier ``i`` holds the events from ``floor(M, next resolution) - span`` on; the last tier's span
is the retention. Because every cutoff is aligned to the next tier's resolution, buckets nest,
and the bucket of an event is a function of its time and ``M`` alone: the state is the same
whatever the batches, and compaction (re-bucketing as ``M`` advances) is exact.

Tiles hold only the events older than the exact span of :mod:`usersignals.aggregations.
windowed` (the last two days are kept at their exact times). A window counts every tile that
overlaps it, so the tiles straddling its edges can add events just outside it (never remove
any): at most one tile of the tier at that age (default layout: 1 min within 2 h, 1 h within
8 days, 1 day beyond).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from usersignals.durations import (
    coerce_duration,
    days,
    duration_problem,
    format_duration,
    hours,
    minutes,
)

Tier = tuple[int, int]  # (resolution_ms, span_ms); the last tier's span is the retention
Group = tuple[Any, ...]
Cells = dict[tuple[int, Group], int]  # (bucket start, group) -> integer value


@dataclass(frozen=True)
class TileLayout:
    """Tier resolutions and spans; ``tiers`` is finest first, the last span is ignored.

    Each resolution and span is a duration (``"1m"``, ``timedelta(hours=2)``, ``hours(2)``).
    """

    tiers: tuple[Tier, ...] = ((minutes(1), hours(2)), (hours(1), days(8)), (days(1), 0))

    def __post_init__(self) -> None:
        if isinstance(self.tiers, tuple | list):
            last = len(self.tiers) - 1
            tiers = tuple(
                (coerce_duration(tier[0]), tier[1] if i == last else coerce_duration(tier[1]))
                if isinstance(tier, tuple | list) and len(tier) == 2
                else tier
                for i, tier in enumerate(self.tiers)
            )
            object.__setattr__(self, "tiers", tiers)

    def problems(self) -> list[str]:
        unreadable = self._unreadable()
        if unreadable:
            return unreadable
        problems = []
        resolutions = [resolution for resolution, _ in self.tiers]
        if not resolutions:
            return ["a tile layout needs at least one tier"]
        for finer, coarser in itertools.pairwise(resolutions):
            if coarser <= finer or coarser % finer:
                problems.append(
                    f"tile resolution {format_duration(coarser)} must be a multiple of the "
                    f"finer {format_duration(finer)}"
                )
        for (_, span), (coarser, _) in zip(self.tiers, self.tiers[1:], strict=False):
            if span <= 0 or span % coarser:
                problems.append(
                    f"tile span {format_duration(span)} must be a positive multiple of "
                    f"{format_duration(coarser)}"
                )
        return problems

    def _unreadable(self) -> list[str]:
        """Tiers that are not (duration, duration) pairs; the last span is not read."""
        if not isinstance(self.tiers, tuple) or not all(
            isinstance(tier, tuple) and len(tier) == 2 for tier in self.tiers
        ):
            return [f"tiles must be a tuple of (resolution, span) pairs, not {self.tiers!r}"]
        problems = []
        for index, (resolution, span) in enumerate(self.tiers):
            problems.append(duration_problem("tile resolution", resolution))
            if index < len(self.tiers) - 1:
                problems.append(duration_problem("tile span", span))
        return [problem for problem in problems if problem]

    def cutoffs(self, newest: int, retention_ms: int) -> list[int]:
        """The first time each tier holds, for a state whose newest event is at ``newest``.

        No tier reaches back past the retention cutoff (aligned to the coarsest resolution,
        hence to every tier): a fine tier longer than the retention is cut short.
        """
        tiers = self.tiers
        coarsest = tiers[-1][0]
        oldest = newest - newest % coarsest - retention_ms
        cutoffs = []
        for index, (_, span) in enumerate(tiers[:-1]):
            align = tiers[index + 1][0]
            cutoffs.append(max(newest - newest % align - span, oldest))
        cutoffs.append(oldest)
        return cutoffs

    def to_json(self) -> list[dict[str, str]]:
        return [
            {"resolution": format_duration(resolution), "span": format_duration(span)}
            for resolution, span in self.tiers[:-1]
        ] + [{"resolution": format_duration(self.tiers[-1][0]), "span": "retention"}]


class Bucketer:
    """Maps event times to bucket starts for one ``M`` (newest time) of a state."""

    __slots__ = ("cutoffs", "pairs", "resolutions")

    def __init__(self, layout: TileLayout, newest: int, retention_ms: int) -> None:
        self.cutoffs = layout.cutoffs(newest, retention_ms)
        self.resolutions = [int(resolution) for resolution, _ in layout.tiers]
        self.pairs = list(zip(self.cutoffs, self.resolutions, strict=True))

    def bucket(self, ts: int) -> int | None:
        """The start of the bucket that holds ``ts``, or ``None`` when it is past retention."""
        for cutoff, resolution in self.pairs:
            if ts >= cutoff:
                return ts - ts % resolution
        return None


class BucketerCache:
    """Bucketers by the part of ``M`` they depend on, shared by all users of a runtime.

    Every cutoff is a floor of ``M`` to a resolution of the second tier or coarser, so users
    whose newest events fall in the same such interval share one bucketer: most of a
    micro-batch's users do.
    """

    __slots__ = ("_by_epoch", "_granule", "layout", "retention_ms")

    def __init__(self, layout: TileLayout, retention_ms: int) -> None:
        self.layout = layout
        self.retention_ms = retention_ms
        tiers = layout.tiers
        self._granule = int(tiers[1][0] if len(tiers) > 1 else tiers[0][0])
        self._by_epoch: dict[int, Bucketer] = {}

    def key(self, newest: int) -> int:
        return newest // self._granule

    def get(self, newest: int) -> Bucketer:
        key = newest // self._granule
        bucketer = self._by_epoch.get(key)
        if bucketer is None:
            if len(self._by_epoch) > 4096:  # bounded: replays sweep through time
                self._by_epoch.clear()
            bucketer = self._by_epoch[key] = Bucketer(
                self.layout, key * self._granule, self.retention_ms
            )
        return bucketer


_WRAP = 2**64
_HALF = 2**63


def wrapped(value: int) -> int:
    """``value`` as a 64-bit two's-complement integer holds it: cells add modulo 2**64, as
    the stored integers do (``aggregations/windowed.py`` says why)."""
    return (value + _HALF) % _WRAP - _HALF


def rebucket(cells: Cells, bucketer: Bucketer) -> Cells:
    """Move every cell to its bucket under ``bucketer`` (coarser as time advances)."""
    out: Cells = {}
    for (start, group), value in cells.items():
        bucket = bucketer.bucket(start)
        if bucket is None:
            continue
        key = (bucket, group)
        out[key] = wrapped(out.get(key, 0) + value)
    return out
