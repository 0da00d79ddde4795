"""usersignals: real-time user signals for ML feature engineering.

Engagement events in; fresh per-user signals out — enriched engagement sequences, windowed
counts, decayed interest profiles, pooled embeddings — read with the caller's context.
"""

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
    ConfigurationError,
    ContextError,
    EnrichmentError,
    SignalDefinitionError,
    SignalNotFoundError,
    StateCodecError,
    StoreError,
    UserSignalsError,
)
from usersignals.events import BadEvent, Event, EventDecoder, EventPolicy, Position
from usersignals.processing import BatchReport, Engine, MicroBatch
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

__version__ = "0.1.0"

__all__ = [
    "BadEvent",
    "BatchReport",
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
