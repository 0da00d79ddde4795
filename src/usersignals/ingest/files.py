"""A newline-delimited JSON file as an event source.

Each line is one event; its position is ``(source id, line number)``. The source id defaults
to ``file:<file name>``, so replaying the same file into the same store changes nothing, and
lines appended to it later are new events (their line numbers are higher). Another file of
the same name replayed into the same store gets a source id of its own (see
``usersignals.ingest.file_sources``); a ``source_id`` given is used as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from usersignals.errors import ConfigurationError
from usersignals.events.model import BadEvent, Position
from usersignals.input_files import check_input_file


@dataclass
class RawBlock:
    """Raw event lines and their positions; ``bad``: records rejected as they were read
    (an export's envelope without a value), dead letters as they are."""

    lines: list[bytes]
    positions: list[Position]
    bad: list[BadEvent] = field(default_factory=list)


class JsonlSource:
    def __init__(self, path: Path, source_id: str | None = None, block_size: int = 20_000):
        check_input_file(path, "events file")
        if block_size < 1:
            raise ConfigurationError("block size must be at least 1")
        self.path = path
        #: Whether the caller named the source; else the replay may give it another id.
        self.named = source_id is not None
        #: The source id the name gives (``file:<name>``), whatever the replay chose.
        self.default_id = f"file:{path.name}"
        self.source_id = source_id or self.default_id
        self.block_size = block_size

    def first_line(self) -> bytes | None:
        """The file's first line that is not blank, without its line end: what tells this
        file from another of its name. ``None`` for a file of blank lines only, or whose
        first such line is not finished (no line end yet: a writer still at it, whose line
        would end otherwise)."""
        with self.path.open("rb") as handle:
            for line in handle:
                if line.strip():
                    return line.rstrip(b"\r\n") if line.endswith(b"\n") else None
        return None

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    def blocks(self) -> Iterator[tuple[RawBlock, int]]:
        """Blocks of lines, each with the number of bytes read so far (for progress bars)."""
        source = self.source_id
        lines: list[bytes] = []
        positions: list[Position] = []
        consumed = 0
        with self.path.open("rb") as handle:
            for number, line in enumerate(handle, 1):
                consumed += len(line)
                lines.append(line)
                positions.append(Position(source, number))
                if len(lines) >= self.block_size:
                    yield RawBlock(lines, positions), consumed
                    lines, positions = [], []
        if lines:
            yield RawBlock(lines, positions), consumed
