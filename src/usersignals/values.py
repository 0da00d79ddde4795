"""The kinds of value a field is expected to hold, and the check of each.

Enriched fields come from outside (a table someone loaded, a Redis hash, an HTTP service), so
their types are not guaranteed: a ``category`` may arrive as a list, an ``embedding`` as
strings. Each aggregation declares what it needs of the fields it reads
(``Aggregation.field_kinds``), the engine collects that per lookup source, and the
Materializer checks every fetched record once, where it enters: a field that does not fit is
removed from the record (signals see it as missing) and counted per source, field and reason.
The checks here are the reference; the Materializer runs them in the core, a batch of records
at a time (``_core.check_records``), and here only where the core is unsure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# Reasons: stable identifiers, they label metrics.
WRONG_TYPE = "wrong_type"
WRONG_LENGTH = "wrong_length"
NOT_FINITE = "not_finite"
NOT_AN_OBJECT = "not_an_object"


@dataclass(frozen=True)
class FieldKind:
    """``key`` (a string or whole number: grouped, counted, ranked by), ``scalar`` (any JSON
    scalar: compared in filters), ``number`` (summed) or ``vector`` (``dim`` numbers)."""

    name: str
    dim: int = 0

    def problem(self, value: Any) -> str | None:
        """``None`` when ``value`` fits this kind, else the reason it does not."""
        if self.name == "key":
            kind = type(value)  # exact types: a bool is an int subclass, and not a key
            return None if kind is str or kind is int else WRONG_TYPE
        if self.name == "scalar":
            if isinstance(value, float):
                return None if math.isfinite(value) else NOT_FINITE
            return None if isinstance(value, str | int) else WRONG_TYPE
        if self.name == "number":
            return _number_problem(value)
        return self._vector_problem(value)

    def _vector_problem(self, value: Any) -> str | None:
        if not isinstance(value, list | tuple):
            return WRONG_TYPE
        if len(value) != self.dim:
            return WRONG_LENGTH
        if not set(map(type, value)) <= _NUMBER_TYPES:
            return WRONG_TYPE
        try:
            total = math.fsum(value)  # nan or inf if any component is
        except (OverflowError, ValueError):  # a sum past the floats; inf and -inf together
            return NOT_FINITE
        return None if math.isfinite(total) else NOT_FINITE

    @property
    def code(self) -> tuple[int, int]:
        """The kind as the core's batch check takes it (``_core.check_records``)."""
        return _CODES[self.name], self.dim


_CODES = {"key": 0, "scalar": 1, "number": 2, "vector": 3}
_NUMBER_TYPES = frozenset({int, float})


def _number_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return WRONG_TYPE
    if isinstance(value, float) and not math.isfinite(value):
        return NOT_FINITE
    return None


KEY = FieldKind("key")
SCALAR = FieldKind("scalar")
NUMBER = FieldKind("number")


def vector(dim: int) -> FieldKind:
    return FieldKind("vector", dim)
