"""What aggregations see of an event: a row, and typed accessors for its fields."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

# A row is one event and, per lookup source of the signal, the record the Materializer joined
# onto it: a dict, a read-only mapping such as a packed record, or an empty dict when the
# source has no record for the event's key.
Row = tuple[Any, tuple[Mapping[str, Any], ...]]
Getter = Callable[[Row], Any]
FieldResolver = Callable[[str], Getter]
