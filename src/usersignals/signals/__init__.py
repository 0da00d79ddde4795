"""The declarative signal definition API."""

from usersignals.durations import days, hours, minutes, parse_duration, seconds
from usersignals.signals.definition import CompiledSignal, Signal, validate_signals
from usersignals.signals.fields import Field, Predicate, action, attr, field, item_id, surface
from usersignals.signals.lookups import Enrichment, Lookup
from usersignals.signals.registry import SignalRegistry, load_module, signals_of

__all__ = [
    "CompiledSignal",
    "Enrichment",
    "Field",
    "Lookup",
    "Predicate",
    "Signal",
    "SignalRegistry",
    "action",
    "attr",
    "days",
    "field",
    "hours",
    "item_id",
    "load_module",
    "minutes",
    "parse_duration",
    "seconds",
    "signals_of",
    "surface",
    "validate_signals",
]
