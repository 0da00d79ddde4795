"""Dead letters: where rejected events go, with their reason and position, never lost."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import msgspec

from usersignals.events.model import BadEvent


class DeadLetterRecord(msgspec.Struct):
    reason: str
    detail: str
    partition: str | None
    offset: int | None
    raw: str


class DeadLetterFile:
    """Appends rejected events to a JSONL file, one record per event."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._handle = path.open("ab")
        self._encoder = msgspec.json.Encoder()
        self.count = 0

    def write(self, bad: list[BadEvent]) -> None:
        for event in bad:
            position = event.position
            record = DeadLetterRecord(
                reason=event.reason,
                detail=event.detail,
                partition=position.partition if position else None,
                offset=position.offset if position else None,
                raw=event.raw.decode("utf-8", errors="replace").rstrip("\n"),
            )
            self._handle.write(self._encoder.encode(record) + b"\n")
        self.count += len(bad)
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> DeadLetterFile:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()
