"""Request and response bodies of the HTTP API (msgspec structs: decoding validates)."""

from __future__ import annotations

from typing import Any

import msgspec

from usersignals.aggregations.context import CONTEXT_PARAMETERS, LIST_PARAMETERS
from usersignals.errors import ContextError

ContextValue = str | int | float | bool | list[str]


class BatchRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Many users x many signals; ``contexts`` overrides ``context`` per signal."""

    users: list[str]
    signals: list[str] | None = None
    context: dict[str, ContextValue] = {}
    contexts: dict[str, dict[str, ContextValue]] = {}


class Rejected(msgspec.Struct):
    index: int
    reason: str
    detail: str


class IngestResponse(msgspec.Struct):
    accepted: int
    rejected: list[Rejected]


class ErrorBody(msgspec.Struct, omit_defaults=True):
    error: str
    message: str
    parameter: str | None = None
    known: list[str] | None = None
    #: An ``as_of`` a signal cannot answer exactly: which signal, and the earliest it can,
    #: for which user.
    signal: str | None = None
    earliest_as_of_ms: int | None = None
    user: str | None = None


class DeleteResponse(msgspec.Struct):
    user_id: str
    status: str


def context_strings(values: dict[str, Any]) -> dict[str, str | None]:
    """JSON context values as the strings ``ReadContext.parse`` reads (as query params are).
    A list is refused for a parameter that takes one value: joined, ``["1h"]`` read as
    ``1h`` and ``["1", "0"]`` as the limit ``1,0``."""
    out: dict[str, str | None] = {}
    for name, value in values.items():
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, list):
            if name in CONTEXT_PARAMETERS and name not in LIST_PARAMETERS:  # others: unknown
                raise ContextError(name, "takes one value, not a list")
            out[name] = ",".join(value)
        else:
            out[name] = str(value)
    return out
