"""Aggregations: incremental, mergeable, canonical per-user states read with a context."""

from usersignals.aggregations.base import (
    Aggregation,
    AggregationRuntime,
    ApplyOut,
    ReadOut,
)
from usersignals.aggregations.context import CONTEXT_PARAMETERS, ReadContext
from usersignals.aggregations.decayed import DecayedScores, MeanVector
from usersignals.aggregations.distinct import Distinct
from usersignals.aggregations.last_n import LastN
from usersignals.aggregations.seen import FirstSeen, LastSeen
from usersignals.aggregations.tiles import TileLayout
from usersignals.aggregations.windowed import Count, Sum

#: The aggregations usersignals ships (each its own kind; the core runs them natively).
BUILT_IN_AGGREGATIONS: tuple[type[Aggregation], ...] = (
    LastN, Count, Sum, Distinct, DecayedScores, MeanVector, FirstSeen, LastSeen,
)  # fmt: skip

__all__ = [
    "BUILT_IN_AGGREGATIONS",
    "CONTEXT_PARAMETERS",
    "Aggregation",
    "AggregationRuntime",
    "ApplyOut",
    "Count",
    "DecayedScores",
    "Distinct",
    "FirstSeen",
    "LastN",
    "LastSeen",
    "MeanVector",
    "ReadContext",
    "ReadOut",
    "Sum",
    "TileLayout",
]
