"""usersignals: real-time user signals for ML feature engineering.

Engagement events in; fresh per-user signals out — enriched engagement sequences, windowed
counts, decayed interest profiles, pooled embeddings — read with the caller's context.
"""

from typing import TYPE_CHECKING, Any

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
from usersignals.enrich import Materializer, TableSource
from usersignals.errors import (
    ApiError,
    AsOfError,
    BrokerError,
    ConfigurationError,
    ContextError,
    EnrichmentError,
    HandoverError,
    IngestUnavailableError,
    InvalidEventError,
    InvalidSettingError,
    NativeCoreError,
    ServiceUnreachableError,
    SignalDefinitionError,
    SignalFailedError,
    SignalNotFoundError,
    SignalReadError,
    SignalRetiredError,
    SignalsMismatchError,
    SparkTaskError,
    SpoolWriteError,
    StateCodecError,
    StoreError,
    UserSignalsError,
)
from usersignals.events import BadEvent, Event, EventDecoder, EventPolicy, Position
from usersignals.processing import BatchReport, Engine, MicroBatch
from usersignals.serving.reader import SignalReader
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

if TYPE_CHECKING:
    from usersignals.serving.client import Client
else:

    def __getattr__(name: str) -> Any:
        """``Client`` on first use: the HTTP client library takes 55 ms to import, which a
        process that never calls the API (a processor, an offline job's shard) need not pay.
        Outside the type checker's view, so a misspelt name is still an error there."""
        if name == "Client":
            from usersignals.serving.client import Client

            globals()["Client"] = Client
            return Client
        raise AttributeError(f"module 'usersignals' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "ApiError",
    "AsOfError",
    "BadEvent",
    "BatchReport",
    "BrokerError",
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
    "IngestUnavailableError",
    "InvalidEventError",
    "InvalidSettingError",
    "LastN",
    "LastSeen",
    "Lookup",
    "Materializer",
    "MeanVector",
    "MicroBatch",
    "NativeCoreError",
    "Position",
    "ReadContext",
    "RocksStore",
    "ServiceUnreachableError",
    "Signal",
    "SignalDefinitionError",
    "SignalFailedError",
    "SignalNotFoundError",
    "SignalReadError",
    "SignalReader",
    "SignalRegistry",
    "SignalRetiredError",
    "SignalsMismatchError",
    "SparkTaskError",
    "SpoolWriteError",
    "StateCodecError",
    "StateStore",
    "StoreError",
    "Sum",
    "TableSource",
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
