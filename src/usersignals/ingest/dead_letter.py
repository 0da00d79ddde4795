"""Dead letters: where rejected events go, with their reason and position, never lost."""

from __future__ import annotations

from pathlib import Path

import msgspec

from usersignals.closing import Closing
from usersignals.events.model import BadEvent


class DeadLetterRecord(msgspec.Struct):
    reason: str
    detail: str
    partition: str | None
    offset: int | None
    raw: str


class DeadLetterFile(Closing):
    """Appends rejected events to a JSONL file, one record per event.

    The file is opened for each write and closed after it: dead letters are rare, and a
    runner that holds no open handle has nothing to leak when it stops without closing.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._encoder = msgspec.json.Encoder()
        self.count = 0

    def write(self, bad: list[BadEvent]) -> None:
        if not bad:
            return
        lines = []
        for event in bad:
            position = event.position
            record = DeadLetterRecord(
                reason=event.reason,
                detail=event.detail,
                partition=position.partition if position else None,
                offset=position.offset if position else None,
                raw=event.raw.decode("utf-8", errors="replace").rstrip("\n"),
            )
            lines.append(self._encoder.encode(record) + b"\n")
        with self.path.open("ab") as handle:
            handle.write(b"".join(lines))
        self.count += len(bad)

    def close(self) -> None:
        """Nothing is held open between writes; kept so callers can close what they own."""
