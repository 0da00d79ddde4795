"""usersignals: real-time user signals for ML feature engineering.

Engagement events in; fresh per-user signals out — enriched engagement sequences, windowed
counts, decayed interest profiles, pooled embeddings — read with the caller's context.
"""

from usersignals._version import __version__
from usersignals.aggregations import (
    Count,
    DecayedScores,
    Distinct,
    FirstSeen,
    LastN,
    LastSeen,
    MeanVector,
    ReadContext,
    Sum,
    TileLayout,
)
from usersignals.errors import (
    ApiError,
    ConfigurationError,
    ContextError,
    EnrichmentError,
    HandoverError,
    SignalDefinitionError,
    SignalNotFoundError,
    StateCodecError,
    StoreError,
    UserSignalsError,
)
from usersignals.events import BadEvent, Event, EventDecoder, EventPolicy, Position
from usersignals.processing import BatchReport, Engine, MicroBatch
from usersignals.serving.client import Client
from usersignals.signals import (
    Lookup,
    Signal,
    SignalRegistry,
    action,
    attr,
    days,
    field,
    hours,
    item_id,
    minutes,
    seconds,
    surface,
)
from usersignals.state import RocksStore, StateStore

__all__ = [
    "ApiError",
    "BadEvent",
    "BatchReport",
    "Client",
    "ConfigurationError",
    "ContextError",
    "Count",
    "DecayedScores",
    "Distinct",
    "Engine",
    "EnrichmentError",
    "Event",
    "EventDecoder",
    "EventPolicy",
    "FirstSeen",
    "HandoverError",
    "LastN",
    "LastSeen",
    "Lookup",
    "MeanVector",
    "MicroBatch",
    "Position",
    "ReadContext",
    "RocksStore",
    "Signal",
    "SignalDefinitionError",
    "SignalNotFoundError",
    "SignalRegistry",
    "StateCodecError",
    "StateStore",
    "StoreError",
    "Sum",
    "TileLayout",
    "UserSignalsError",
    "__version__",
    "action",
    "attr",
    "days",
    "field",
    "hours",
    "item_id",
    "minutes",
    "seconds",
    "surface",
]
