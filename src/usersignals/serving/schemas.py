"""Request and response bodies of the HTTP API (msgspec structs: decoding validates)."""

from __future__ import annotations

from typing import Any

import msgspec

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
    #: An ``as_of`` a signal cannot answer exactly: which signal, and the earliest it can.
    signal: str | None = None
    earliest_as_of_ms: int | None = None


class DeleteResponse(msgspec.Struct):
    user_id: str
    status: str


def context_strings(values: dict[str, Any]) -> dict[str, str | None]:
    """JSON context values as the strings ``ReadContext.parse`` reads (as query params are)."""
    out: dict[str, str | None] = {}
    for name, value in values.items():
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, list):
            out[name] = ",".join(value)
        else:
            out[name] = str(value)
    return out
