"""Straightforward recomputation of every signal from the raw events, per the README's table.

Written from the documented semantics only (window edges, retention, ``as_of``, ties), with
plain loops over the ground-truth events: no usersignals aggregation code is used. Times are
ms since the epoch; ``view`` is the read's ``as_of``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from workload import DAY, TruthEvent

Item = dict[str, Any]


def ceil_to(ms: int, granule: int) -> int:
    return -(-ms // granule) * granule


def last_n(
    events: Sequence[TruthEvent],
    view: int,
    retention: int,
    n: int,
    keep: Sequence[str],
    items: dict[str, Item],
    dedupe_by: str | None = None,
    window: int | None = None,
) -> list[dict[str, Any]]:
    """The last n events at or before ``view`` within the retention (ties: CRC-32 of the id)."""
    candidates = sorted(
        (e for e in events if view - retention <= e.ts <= view),
        key=lambda e: (e.ts, zlib.crc32(e.event_id.encode())),
        reverse=True,
    )
    if dedupe_by is not None:
        seen: set[Any] = set()
        kept = []
        for e in candidates:
            if getattr(e, dedupe_by) not in seen:
                seen.add(getattr(e, dedupe_by))
                kept.append(e)
        candidates = kept
    out = []
    for e in candidates[:n]:
        if window is not None and e.ts < view - window:
            break
        record: dict[str, Any] = {"ts": e.ts}
        for name in keep:
            record[name] = (
                items.get(e.item_id, {}).get(name) if name == "category" else getattr(e, name)
            )
        out.append(record)
    return out


def count(
    events: Iterable[TruthEvent], start: int, end: int, value: Callable[[TruthEvent], float | None]
) -> tuple[float, dict[str, float]]:
    """Total and per-first-group sums over the events in [start, end]."""
    total = 0.0
    by: dict[str, float] = {}
    for e in events:
        if start <= e.ts <= end:
            v = value(e)
            if v is not None:
                total += v
                by[e.action] = by.get(e.action, 0) + v
    return total, by


def decayed_scores(
    events: Iterable[TruthEvent],
    view: int,
    retention: int,
    half_life: int,
    weights: dict[str, float],
    items: dict[str, Item],
) -> tuple[dict[str, float], int]:
    """Σ weight · 2^(-(view - t)/half_life) per category over [ceil_day(view - R), view]."""
    first = ceil_to(view - retention, DAY)
    scores: dict[str, float] = {}
    counted = 0
    for e in events:
        weight = weights.get(e.action, 0.0)
        record = items.get(e.item_id)
        if not weight or record is None or not first <= e.ts <= view:
            continue
        counted += 1
        key = record["category"]
        scores[key] = scores.get(key, 0.0) + weight * 2 ** (-(view - e.ts) / half_life)
    return scores, counted


def mean_vector(
    events: Iterable[TruthEvent],
    view: int,
    retention: int,
    half_life: int,
    weights: dict[str, float],
    items: dict[str, Item],
) -> tuple[list[float] | None, float, int]:
    first = ceil_to(view - retention, DAY)
    total = 0.0
    sums = [0.0] * 4
    counted = 0
    for e in events:
        weight = weights.get(e.action, 0.0)
        record = items.get(e.item_id)
        if not weight or record is None or not first <= e.ts <= view:
            continue
        counted += 1
        w = weight * 2 ** (-(view - e.ts) / half_life)
        total += w
        sums = [s + w * c for s, c in zip(sums, record["embedding"], strict=True)]
    return ([s / total for s in sums] if total else None), total, counted


def distinct(
    events: Iterable[TruthEvent], start: int, end: int, of: Callable[[TruthEvent], Any]
) -> int:
    return len({of(e) for e in events if start <= e.ts <= end and of(e) is not None})


def first_seen(events: Iterable[TruthEvent], end: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in events:
        if e.ts <= end:
            out[e.surface] = min(out.get(e.surface, e.ts), e.ts)
    return dict(sorted(out.items()))


def last_seen(events: Iterable[TruthEvent], view: int, retention: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in events:
        if view - retention <= e.ts <= view:
            out[e.action] = max(out.get(e.action, e.ts), e.ts)
    return dict(sorted(out.items()))
