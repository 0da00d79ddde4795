"""The record of one logged answer, as every feature log sink and reader holds it."""

from __future__ import annotations

from typing import Any

import msgspec


class LoggedAnswer(msgspec.Struct):
    name: str
    version: int
    value: Any
    #: The newest event the answer counted, as the API said (``None``: it counted none;
    #: unset in logs written before it was kept): what tells a served state that was
    #: behind from a bug.
    newest_event_ms: int | msgspec.UnsetType | None = msgspec.UNSET


class FeatureLogRecord(msgspec.Struct):
    user_id: str
    #: The request's time: the "now" the context was read at (ms since the epoch).
    ts: int
    #: The request's query parameters as given (``names`` included).
    params: dict[str, str]
    #: Per signal as the answer names it (``interests``, ``interests@2``).
    signals: dict[str, LoggedAnswer]
