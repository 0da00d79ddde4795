"""The event schema, decoding and validation."""

from usersignals.events.decode import (
    REASONS,
    DecodeResult,
    EventDecoder,
    EventPolicy,
    encode_events,
)
from usersignals.events.model import AttrValue, BadEvent, Event, Position

__all__ = [
    "REASONS",
    "AttrValue",
    "BadEvent",
    "DecodeResult",
    "Event",
    "EventDecoder",
    "EventPolicy",
    "Position",
    "encode_events",
]
