"""The five reference signals as one plain-Python fold, shared by the other frameworks' jobs.

bench/ingest.py compares usersignals with Quix Streams, Pathway and Bytewax computing the
same signals; each framework's job (bench/*_reference.py, run in that framework's own venv)
only wires this fold into its per-key state, so all three compute exactly the same thing:
an enriched LastN(500) of engagements, counts per (action, surface) in hourly tiles over
28 days, decayed category interest, a decayed mean embedding, and distinct creators per day
over 7 days. The item table is held in memory for enrichment, as each framework would.

Standard library only: it is imported from each framework's venv, not from usersignals'.
"""

from __future__ import annotations

import bisect
import json
from typing import Any

HALF_LIFE_MS = 7 * 86_400_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
WEIGHTS = {"impression": 0.1, "closeup": 1.0, "click": 2.0, "save": 4.0, "share": 4.0, "hide": -4.0}
ENGAGEMENTS = {"closeup", "click", "save", "share", "hide"}

State = dict[str, Any]
Item = dict[str, Any]


def load_items(path: str) -> dict[str, Item]:
    """The item table (JSON lines keyed by ``item_id``) that enriches the events."""
    items = {}
    with open(path, "rb") as handle:
        for line in handle:
            record = json.loads(line)
            items[record["item_id"]] = record
    return items


def apply(state: State, event: dict[str, Any], item: Item) -> State:
    """Fold one event (and its item, ``{}`` when unknown) into a user's state, in place."""
    ts, action = event["ts"], event["action"]
    weight = WEIGHTS.get(action, 0.0)
    if action in ENGAGEMENTS:
        _last_n(state, event, item)
        _creators(state, ts, item)
    _counts(state, ts, action, event["surface"])
    category = item.get("category")
    if category and weight:
        interest = state.setdefault("interest", {})
        score, at = interest.get(category, [0.0, ts])
        interest[category] = [score * _decay(ts, at) + weight, max(ts, at)]
    if action in ENGAGEMENTS - {"hide"} and item.get("embedding"):
        total_weight, vector, at = state.get("taste", [0.0, [0.0] * 32, ts])
        decay = _decay(ts, at)
        vector = [v * decay + weight * x for v, x in zip(vector, item["embedding"], strict=True)]
        state["taste"] = [total_weight * decay + weight, vector, max(ts, at)]
    return state


def _decay(ts: int, at: int) -> float:
    return float(2 ** (-(max(ts - at, 0)) / HALF_LIFE_MS))


def _last_n(state: State, event: dict[str, Any], item: Item) -> None:
    """Newest first, at most 500; an entry goes after those with the same or a newer time
    (as a stable sort of the list with the entry appended would place it), found from the
    front: events come mostly in time order, so that is usually at once."""
    last = state.setdefault("last_n", [])
    ts = event["ts"]
    at = 0
    while at < len(last) and last[at][0] >= ts:
        at += 1
    last.insert(at, [ts, event["item_id"], event["action"], event["surface"],
                     item.get("category")])  # fmt: skip
    del last[500:]


def _creators(state: State, ts: int, item: Item) -> None:
    """Distinct creators per day, days older than 7 days before the event dropped."""
    days = state.setdefault("creators", {})
    day = ts - ts % DAY_MS
    creator = item.get("creator_id")
    creators = days.setdefault(str(day), [])
    if creator and creator not in creators:
        bisect.insort(creators, creator)
    _expire(days, state, "creators_oldest", day, ts - 7 * DAY_MS)


def _counts(state: State, ts: int, action: str, surface: str) -> None:
    """Counts per (hour, action, surface), cells older than 28 days before the event dropped."""
    counts = state.setdefault("counts", {})
    hour = ts - ts % HOUR_MS
    cell = f"{hour}|{action}|{surface}"
    counts[cell] = counts.get(cell, 0) + 1
    _expire(counts, state, "counts_oldest", hour, ts - 28 * DAY_MS)


def _expire(
    cells: dict[str, Any], state: State, oldest_key: str, touched: int, cutoff: int
) -> None:
    """Drop the cells (keyed by their start time, then ``|``...) that start before
    ``cutoff``. The oldest start is kept in the state, so the cells are walked only when
    that one has expired: most events expire nothing."""
    oldest = min(state.get(oldest_key, touched), touched)
    if oldest < cutoff:
        for key in [key for key in cells if int(key.split("|")[0]) < cutoff]:
            del cells[key]
        oldest = min((int(key.split("|")[0]) for key in cells), default=touched)
    state[oldest_key] = oldest
