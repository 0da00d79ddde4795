"""The five reference signals of the reference workload (see the README).

Used by the quick start, the tests and every benchmark. Copy this module to start your own:
``usersignals signals compile usersignals.examples.reference`` shows what it compiles to.
"""

from __future__ import annotations

from usersignals import (
    Count,
    DecayedScores,
    Distinct,
    LastN,
    Lookup,
    MeanVector,
    Signal,
    TileLayout,
    action,
    days,
    hours,
    minutes,
)

#: The item table of the reference workload: ``usersignals tables load items items.jsonl``.
items = Lookup("items", key="item_id", provides=("category", "creator_id", "embedding"))

ENGAGEMENTS = frozenset({"closeup", "click", "save", "share", "hide"})

#: How much each action says about interest; a hide says "less of this".
INTEREST_WEIGHTS = {
    "impression": 0.1,
    "closeup": 1.0,
    "click": 2.0,
    "save": 4.0,
    "share": 4.0,
    "hide": -4.0,
}

recent_engagements = Signal(
    name="recent_engagements",
    version=1,
    description="The last 500 engagements (not impressions), enriched with the category.",
    where=action.isin(ENGAGEMENTS),
    enrich=[items.fields("category")],
    aggregate=LastN(500, keep=("item_id", "action", "surface", "category")),
    retention=days(90),
)

action_counts = Signal(
    name="action_counts",
    version=1,
    description="Events per action (filterable by surface) over any window up to 28 days.",
    aggregate=Count(
        by=("action", "surface"),
        # 5-minute tiles for the last 2-3 hours, hourly for a day or two, 6-hourly for 8 days,
        # daily beyond: the edge of a 1 h / 1 d / 7 d / 28 d window is within 5 min / 1 h /
        # 6 h / 1 d, and a busy user's state stays a few KB.
        tiles=TileLayout(
            ((minutes(5), hours(2)), (hours(1), days(1)), (hours(6), days(8)), (days(1), 0))
        ),
    ),
    retention=days(28),
)

category_interest = Signal(
    name="category_interest",
    version=1,
    description="Interest per item category, decayed with a 7-day half-life; read as top 20.",
    enrich=[items.fields("category")],
    aggregate=DecayedScores(
        key="category", half_life=days(7), weights=INTEREST_WEIGHTS, default_weight=0.0, top_k=20
    ),
    retention=days(90),
)

taste_embedding = Signal(
    name="taste_embedding",
    version=1,
    description="Mean embedding of engaged items, decayed with a 7-day half-life.",
    where=action.isin({"closeup", "click", "save", "share"}),
    enrich=[items.fields("embedding")],
    aggregate=MeanVector(of="embedding", dim=32, half_life=days(7), weights=INTEREST_WEIGHTS),
    retention=days(90),
)

distinct_creators = Signal(
    name="distinct_creators",
    version=1,
    description="Approximate number of distinct creators engaged with over 7 days.",
    where=action.isin(ENGAGEMENTS),
    enrich=[items.fields("creator_id")],
    aggregate=Distinct(of="creator_id", precision=8),
    retention=days(7),
)

SIGNALS = [
    recent_engagements,
    action_counts,
    category_interest,
    taste_embedding,
    distinct_creators,
]
