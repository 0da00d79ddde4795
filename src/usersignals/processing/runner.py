"""The processor loop over the HTTP spool: tail, decode, process, remember where it stopped."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import msgspec

from usersignals.events.decode import EventDecoder
from usersignals.ingest.dead_letter import DeadLetterFile
from usersignals.ingest.spool import SpoolChunk, SpoolReader, parse_control
from usersignals.processing.batch import BatchReport, MicroBatch
from usersignals.processing.engine import Engine
from usersignals.state.keys import meta_key

logger = logging.getLogger(__name__)

SPOOL_MARKS_KEY = meta_key("spool_marks")
_marks_type = dict[str, tuple[int, int]]


@dataclass
class RunnerStats:
    batches: int = 0
    lines: int = 0
    bad: int = 0
    deleted_users: int = 0
    report: BatchReport = field(default_factory=BatchReport)


class SpoolRunner:
    """Processes everything the serving workers spool, in micro-batches."""

    def __init__(
        self,
        engine: Engine,
        decoder: EventDecoder,
        reader: SpoolReader,
        dead_letters: DeadLetterFile,
        batch_size: int = 50_000,
        idle_sleep_s: float = 0.02,
    ) -> None:
        self.engine = engine
        self.decoder = decoder
        self.reader = reader
        self.dead_letters = dead_letters
        self.batch_size = batch_size
        self.idle_sleep_s = idle_sleep_s
        self.stats = RunnerStats()
        stored = engine.store.get_many([SPOOL_MARKS_KEY])[0]
        if stored:
            reader.marks.update(msgspec.msgpack.decode(stored, type=_marks_type))

    def run_once(self) -> int:
        """Process what is available now; returns the number of lines consumed."""
        consumed = 0
        for chunk in self.reader.poll(self.batch_size):
            self._process(chunk)
            consumed += len(chunk.lines)
        return consumed

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            if not self.run_once():
                stop.wait(self.idle_sleep_s)

    def _process(self, chunk: SpoolChunk) -> None:
        # Control records split the chunk: the events before a delete are applied first.
        start = 0
        for index, line in enumerate(chunk.lines):
            control = parse_control(line)
            if control is None:
                continue
            self._events(chunk, start, index)
            self.reader.marks[chunk.partition] = (
                self._offset_after(chunk, index),
                chunk.positions[index].offset,
            )
            self.engine.delete_users([control.user_id], self._marks())
            self.stats.deleted_users += 1
            start = index + 1
        self.reader.advance(chunk)
        self._events(chunk, start, len(chunk.lines), final=True)

    def _events(self, chunk: SpoolChunk, start: int, end: int, final: bool = False) -> None:
        if start >= end and not final:
            return
        decoded = self.decoder.decode_block(chunk.lines[start:end], chunk.positions[start:end])
        if decoded.bad:
            self.dead_letters.write(decoded.bad)
            self.stats.bad += len(decoded.bad)
        report = self.engine.process(
            MicroBatch(decoded.events, decoded.positions), self._marks() if final else None
        )
        self.stats.report.add(report)
        self.stats.batches += 1
        self.stats.lines += end - start

    def _marks(self) -> dict[bytes, bytes]:
        return {SPOOL_MARKS_KEY: msgspec.msgpack.encode(self.reader.marks)}

    @staticmethod
    def _offset_after(chunk: SpoolChunk, index: int) -> int:
        # Byte offset just after line ``index`` of the chunk.
        tail = sum(len(line) for line in chunk.lines[index + 1 :])
        return chunk.end_offset - tail
