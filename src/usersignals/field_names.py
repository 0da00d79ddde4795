"""Tuples of field names in definitions, where a single name may be written as a string.

``Count(by="action")`` plainly means ``by=("action",)`` — as ``pandas.DataFrame.groupby("a")``
means one column — so a string is taken as one field name rather than as a sequence of
letters (which once reported one error per letter).
"""

from __future__ import annotations

from collections.abc import Sequence

#: What a definition's constructor takes where its field holds a tuple of names: one name,
#: or a sequence of them. The constructors the type checker reads say so (written out under
#: ``TYPE_CHECKING``: a dataclass's own would take the field's type, the stored tuple).
FieldNames = str | Sequence[str]


def coerce_names(value: object) -> object:
    """A string → a one-name tuple, a list or tuple → a tuple; anything else unchanged."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple):
        return tuple(value)
    return value


def names_problem(name: str, value: object) -> str | None:
    """Why ``value`` is not a tuple of field names, naming the parameter; None if it is."""
    if not isinstance(value, tuple) or not all(isinstance(item, str) and item for item in value):
        example = '("action",)'
        return (
            f"{name} must be a field name or a tuple of field names, e.g. {example}, not {value!r}"
        )
    return None
