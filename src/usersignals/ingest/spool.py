"""The spool: a durable, append-only log of events accepted over HTTP.

Each writer (a serving worker) appends to files of its own, fsyncing before it answers, so an
accepted event survives any crash. The processor tails every file of the directory: a line's
position is ``(spool:<file name>, line number)``, so the engine's per-user progress makes
re-reading a line harmless, and each file's (byte offset, line number) mark is saved with the
state it produced (one atomic write, one key per file), so a restart resumes where it left.

Why the files are safe to tidy and to crash in:

- **A unique identity per file.** A name is ``<prefix>-<ms>-<random>``, never derived from a
  process id alone (containers reuse those), so a file removed by an operator or by the
  processor can never be confused with a new one that happens to share a progress mark.
- **The writer holds an exclusive ``flock`` on its file** while it may append. The file is
  created under a hidden name, locked, then renamed into place, so the processor never sees an
  unlocked live file. When the lock is free the writer has closed the file or died: its last
  partial line, if any, was never acknowledged (a torn tail) and is skipped, and a fully
  applied file is deleted together with its progress key.
- **A failed append is rolled back.** On any error (disk full, file too large, I/O error) the
  file is truncated back to where the append started, so no line of a request that was
  answered with an error can be applied later. If even that fails, the writer retires the
  file (no more appends) and raises.
- Files rotate at ``segment_bytes``, so an applied segment can be deleted while its writer
  goes on.

Lines are events, or control records ``{"op": "delete", "user_id": ...}`` for the admin
delete, applied in stream order.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from usersignals.errors import SpoolWriteError
from usersignals.events.model import Position
from usersignals.state.keys import meta_key

logger = logging.getLogger(__name__)

SUFFIX = ".jsonl"
DEFAULT_SEGMENT_BYTES = 64 << 20


class DeleteUser(msgspec.Struct, tag_field="op", tag="delete", forbid_unknown_fields=True):
    """A deletion record. No field beyond its own: an event that carries an ``"op":
    "delete"`` of its own is an event (its unknown field ignored, as any other), never a
    deletion that would wipe its user. So a field added here later must come with a new
    ``op`` tag (or a format version): a processor of this release dead-letters a deletion
    with a field it does not know, and would do so during a rolling upgrade."""

    user_id: str
    #: Byte size of every other spool file when the deletion was accepted: the lines of this
    #: user acknowledged before it, which the deletion must outrank in whatever order the
    #: processor reads the files.
    before: dict[str, int] = {}


_control_encoder = msgspec.json.Encoder()


def encode_delete(user_id: str, before: dict[str, int] | None = None) -> bytes:
    """The control line that deletes ``user_id`` (in the spool and on a Kafka topic)."""
    return _control_encoder.encode(DeleteUser(user_id, before or {}))


def mark_key(partition: str) -> bytes:
    """The store key of one file's progress mark (``partition`` is ``spool:<file stem>``)."""
    return meta_key("spool_mark:" + partition.removeprefix("spool:"))


def decode_mark(stored: bytes | None) -> tuple[int, int]:
    """(byte offset, line number) applied so far; (0, 0) for a file not yet started."""
    return msgspec.msgpack.decode(stored, type=tuple[int, int]) if stored else (0, 0)


def encode_mark(mark: tuple[int, int]) -> bytes:
    return msgspec.msgpack.encode(mark)


def unique_name(prefix: str) -> str:
    """A file name no other writer, before or after, will use: time plus 64 random bits."""
    return f"{prefix}-{time.time_ns() // 1_000_000}-{secrets.token_hex(8)}"


class SpoolWriter:
    """Appends lines to the writer's current spool file, durably (fsync) before returning."""

    def __init__(
        self, directory: Path, prefix: str = "writer", segment_bytes: int = DEFAULT_SEGMENT_BYTES
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.prefix = prefix
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._fd = -1
        self._size = 0
        self.path = self._open_segment()

    def _open_segment(self) -> Path:
        name = unique_name(self.prefix)
        hidden = self.directory / f".{name}.tmp"
        path = self.directory / f"{name}{SUFFIX}"
        fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(hidden, path)  # visible only once locked
        except OSError:
            os.close(fd)
            raise
        self._fd, self._size, self.path = fd, 0, path
        return path

    def append(self, lines: list[bytes]) -> None:
        """Append ``lines`` (each without a newline) and fsync; returns once durable.

        Raises :class:`SpoolWriteError` after rolling the file back to where it was.
        """
        payload = b"".join(line + b"\n" for line in lines)
        with self._lock:
            if self._fd < 0:
                self._open_segment()
            start = self._size
            try:
                view = memoryview(payload)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
                os.fsync(self._fd)
            except OSError as exc:
                self._roll_back(start)
                raise SpoolWriteError(str(self.path), _reason(exc), str(exc)) from exc
            self._size = start + len(payload)
            if self._size >= self.segment_bytes:
                self._release()  # the next append starts a new segment

    def _roll_back(self, start: int) -> None:
        try:
            os.ftruncate(self._fd, start)
            os.fsync(self._fd)
        except OSError:
            # The file may hold lines of a request that failed: stop appending to it and let
            # the operator see why. The processor reads only to the last complete line.
            logger.exception("cannot roll back %s; retiring it", self.path)
            self._release()

    def deletion_line(self, user_id: str) -> bytes:
        """The control line deleting ``user_id``, with the size of every other spool file now:
        every line acknowledged before this deletion lies within those sizes."""
        before = {p.removeprefix("spool:"): n for p, n in spool_files(self.directory).items()}
        before.pop(self.path.stem, None)
        return encode_delete(user_id, before)

    def delete_user(self, user_id: str) -> None:
        self.append([self.deletion_line(user_id)])

    def _release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # releases the flock: the processor may retire the file
            self._fd = -1

    def close(self) -> None:
        with self._lock:
            self._release()


def _reason(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "disk_full"
    return "io_error"


def writer_gone(path: Path) -> bool:
    """Whether no writer holds ``path`` any more (closed, rotated or dead)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # also releases our lock
    return True


@dataclass
class SpoolChunk:
    """New complete lines of one spool file and where reading stopped."""

    partition: str
    lines: list[bytes]
    positions: list[Position]
    end_offset: int  # byte offset after the last complete line
    end_line: int  # line number of the last complete line


@dataclass
class FinishedFile:
    """A file whose writer is gone and whose every complete line has been read."""

    path: Path
    partition: str
    torn_tail_bytes: int = 0


@dataclass
class SpoolReader:
    """Tails every file of a spool directory from saved (byte offset, line number) marks.

    ``load_mark`` is asked once per newly seen file for its saved mark (the processor reads it
    from the store); ``finished`` collects the files that can be retired once applied.
    """

    directory: Path
    load_mark: Callable[[str], tuple[int, int]] = lambda partition: (0, 0)
    marks: dict[str, tuple[int, int]] = field(default_factory=dict)
    finished: list[FinishedFile] = field(default_factory=list)

    def poll(self, max_lines: int) -> Iterator[SpoolChunk]:
        """New complete lines, at most ``max_lines`` in all; a torn last line waits."""
        budget = max_lines
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            if budget <= 0:
                return
            partition = f"spool:{path.stem}"
            if partition not in self.marks:
                self.marks[partition] = self.load_mark(partition)
            offset, line_number = self.marks[partition]
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if size <= offset or self._only_torn_tail(path, offset, size):
                # Checked after the size: a writer that appends in between still holds
                # its lock, so a file is never called finished with lines unread.
                if writer_gone(path):
                    self.finished.append(FinishedFile(path, partition, max(size - offset, 0)))
                continue
            chunk = _read_lines(path, partition, offset, line_number, budget)
            if chunk.lines:
                budget -= len(chunk.lines)
                yield chunk

    @staticmethod
    def _only_torn_tail(path: Path, offset: int, size: int) -> bool:
        with path.open("rb") as handle:
            handle.seek(offset)
            return b"\n" not in handle.read(size - offset)

    def lines_before(self, cutoffs: dict[str, int]) -> dict[str, int]:
        """Per file, the number of complete lines within its first ``cutoffs[stem]`` bytes:
        the read positions of every line a writer had acknowledged at the time."""
        counts: dict[str, int] = {}
        for stem, size in cutoffs.items():
            partition = f"spool:{stem}"
            if partition not in self.marks:
                self.marks[partition] = self.load_mark(partition)
            offset, line_number = self.marks[partition]
            if offset > size:  # read past the cutoff already: count from the start
                offset, line_number = 0, 0
            try:
                with (self.directory / f"{stem}{SUFFIX}").open("rb") as handle:
                    handle.seek(offset)
                    line_number += handle.read(size - offset).count(b"\n")
            except FileNotFoundError:
                continue  # retired: every line of it was applied before the deletion
            if line_number:
                counts[partition] = line_number
        return counts

    def advance(self, chunk: SpoolChunk) -> None:
        self.marks[chunk.partition] = (chunk.end_offset, chunk.end_line)

    def forget(self, finished: FinishedFile) -> None:
        self.marks.pop(finished.partition, None)


def _read_lines(
    path: Path, partition: str, offset: int, line_number: int, budget: int
) -> SpoolChunk:
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
    return SpoolChunk(partition, lines, positions, offset, line_number)


def spool_files(directory: Path) -> dict[str, int]:
    """Size of every spool file in ``directory`` (those not yet retired), by partition."""
    sizes: dict[str, int] = {}
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.endswith(SUFFIX):
                    with contextlib.suppress(FileNotFoundError):  # retired meanwhile
                        sizes[f"spool:{entry.name[: -len(SUFFIX)]}"] = entry.stat().st_size
    except FileNotFoundError:
        pass
    return sizes


#: What every control record's line holds (its ``"op"`` key): a line without it is an event.
CONTROL_MARK = b'"op"'


def parse_control(line: bytes) -> DeleteUser | None:
    """The control record on ``line``, or ``None`` when it is an event (the common case)."""
    if CONTROL_MARK not in line:
        return None
    try:
        return msgspec.json.decode(line, type=DeleteUser)
    except msgspec.DecodeError:
        return None
