"""The kinds of value a field is expected to hold, and the check of each.

Enriched fields come from outside (a table someone loaded, a Redis hash, an HTTP service), so
their types are not guaranteed: a ``category`` may arrive as a list, an ``embedding`` as
strings. Each aggregation declares what it needs of the fields it reads
(``Aggregation.field_kinds``), the engine collects that per lookup source, and the
Materializer checks every fetched record once, where it enters: a field that does not fit is
removed from the record (signals see it as missing) and counted per source, field and reason.
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
            ok = isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
            return None if ok else WRONG_TYPE
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
        for component in value:
            problem = _number_problem(component)
            if problem is not None:
                return problem
        return None


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
