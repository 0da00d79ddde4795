"""Checks of an aggregation's parameters, as problems a definition lists.

A parameter of the wrong type must be a problem like any other (``SignalDefinitionError``,
one line from the CLI), not a ``TypeError`` from the comparison with its bounds, nor a float
or ``True`` that passes them and fails later in the core's plan.
"""

from __future__ import annotations

import math


def whole_number_problem(label: str, value: object, low: int, high: int) -> str | None:
    """Why ``value`` is not a whole number from ``low`` to ``high``; None if it is."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return f"{label} must be a whole number from {low} to {high}, not {value!r}"
    return None


def number_problem(label: str, value: object, bound: float) -> str | None:
    """Why ``value`` is not a finite number within ±``bound``; None if it is."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not -bound <= value <= bound
    ):
        return f"{label} must be a number within ±{bound:g}, not {value!r}"
    return None


def field_name_problem(label: str, value: object, optional: bool = False) -> str | None:
    """Why ``value`` is not one field name (or ``None``, when ``optional``); None if it is.
    A tuple is the natural mistake: Count's ``by`` takes several fields."""
    if (optional and value is None) or (isinstance(value, str) and value):
        return None
    return f"{label} must be one field name such as 'category', not {value!r}"
