"""The spool: a durable, append-only log of events accepted over HTTP.

Each serving worker appends to its own file (``DIR/<worker>.jsonl``), flushing and fsyncing
before it answers, so an accepted event survives any crash. The processor tails every file of
the directory: a line's position is ``(spool:<file name>, line number)``, so the engine's
per-user progress makes re-reading a line harmless, and the byte offset reached in each file
is saved with the state it produced (one atomic write), so a restart resumes where it left.

Lines are events, or control records ``{"op": "delete", "user_id": ...}`` for the admin
delete, applied in stream order.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import msgspec

from usersignals.events.model import Position

_SUFFIX = ".jsonl"


class DeleteUser(msgspec.Struct, tag_field="op", tag="delete"):
    user_id: str


_control_encoder = msgspec.json.Encoder()


class SpoolWriter:
    """Appends lines to one spool file, durably (fsync) before returning."""

    def __init__(self, directory: Path, name: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{name}{_SUFFIX}"
        self._handle = self.path.open("ab")
        self._lock = threading.Lock()

    def append(self, lines: list[bytes]) -> None:
        """Append ``lines`` (each without a newline) and fsync; returns once durable."""
        payload = b"".join(line + b"\n" for line in lines)
        with self._lock:
            self._handle.write(payload)
            self._handle.flush()
            os.fsync(self._handle.fileno())

    def delete_user(self, user_id: str) -> None:
        self.append([_control_encoder.encode(DeleteUser(user_id))])

    def close(self) -> None:
        self._handle.close()


@dataclass
class SpoolChunk:
    """New complete lines of one spool file and where reading stopped."""

    partition: str
    lines: list[bytes]
    positions: list[Position]
    end_offset: int  # byte offset after the last complete line
    end_line: int  # line number of the last complete line


class SpoolReader:
    """Tails every file of a spool directory from saved (byte offset, line number) marks."""

    def __init__(self, directory: Path, marks: Mapping[str, tuple[int, int]] | None = None):
        self.directory = directory
        self.marks: dict[str, tuple[int, int]] = dict(marks or {})

    def poll(self, max_lines: int) -> Iterator[SpoolChunk]:
        """New complete lines, at most ``max_lines`` in all; a torn last line waits."""
        budget = max_lines
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.glob(f"*{_SUFFIX}")):
            if budget <= 0:
                return
            partition = f"spool:{path.stem}"
            offset, line_number = self.marks.get(partition, (0, 0))
            if path.stat().st_size <= offset:
                continue
            lines: list[bytes] = []
            positions: list[Position] = []
            with path.open("rb") as handle:
                handle.seek(offset)
                for raw in handle:
                    if not raw.endswith(b"\n"):
                        break  # written in part: read it once it is complete
                    offset += len(raw)
                    line_number += 1
                    lines.append(raw)
                    positions.append(Position(partition, line_number))
                    if len(lines) >= budget:
                        break
            if lines:
                budget -= len(lines)
                yield SpoolChunk(partition, lines, positions, offset, line_number)

    def advance(self, chunk: SpoolChunk) -> None:
        self.marks[chunk.partition] = (chunk.end_offset, chunk.end_line)


def parse_control(line: bytes) -> DeleteUser | None:
    """The control record on ``line``, or ``None`` when it is an event (the common case)."""
    if b'"op"' not in line:
        return None
    try:
        return msgspec.json.decode(line, type=DeleteUser)
    except msgspec.DecodeError:
        return None
