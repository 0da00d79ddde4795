"""The processor loop over the HTTP spool: tail, decode, process, remember where it stopped.

Each spool file has its own progress key (``m:spool_mark:<file>``), written atomically with
the state its lines produced. A file whose writer is gone and whose lines are all applied is
deleted, then its key: a crash in between leaves a key without a file, which is harmless
(names are never reused).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import msgspec

from usersignals.closing import SupportsClose
from usersignals.events.decode import EventDecoder
from usersignals.ingest.dead_letter import DeadLetterFile
from usersignals.ingest.spool import (
    FinishedFile,
    SpoolChunk,
    SpoolReader,
    decode_mark,
    encode_mark,
    mark_key,
)
from usersignals.processing.engine import Engine
from usersignals.processing.metrics import ProcessorMetrics
from usersignals.processing.pipeline import PipelineRunner, PipelineStep, Segment
from usersignals.processing.store_retry import StoreRetry
from usersignals.state.keys import meta_key

logger = logging.getLogger(__name__)

#: Where every file's marks were kept together before one key per file; migrated on start.
LEGACY_MARKS_KEY = meta_key("spool_marks")
_legacy_type = dict[str, tuple[int, int]]


class SpoolRunner(PipelineRunner):
    """Processes everything the serving workers spool, in micro-batches."""

    def __init__(
        self,
        engine: Engine,
        decoder: EventDecoder,
        reader: SpoolReader,
        dead_letters: DeadLetterFile,
        batch_size: int = 50_000,
        idle_sleep_s: float = 0.02,
        retry: StoreRetry | None = None,
        owns: Sequence[SupportsClose] = (),
    ) -> None:
        self.retry = retry or StoreRetry()
        super().__init__(PipelineStep(engine, decoder, dead_letters, self.retry), owns)
        self.engine = engine
        self.reader = reader
        self.batch_size = batch_size
        self.idle_sleep_s = idle_sleep_s
        reader.load_mark = self._load_mark
        self._migrate_legacy_marks()

    @property
    def metrics(self) -> ProcessorMetrics | None:
        return self.retry.metrics

    def _load_mark(self, partition: str) -> tuple[int, int]:
        key = mark_key(partition)
        stored = self.retry.call(lambda: self.engine.store.get_many([key])[0], "reading marks")
        return decode_mark(stored)

    def _migrate_legacy_marks(self) -> None:
        store = self.engine.store
        stored = store.get_many([LEGACY_MARKS_KEY])[0]
        if not stored:
            return
        legacy = msgspec.msgpack.decode(stored, type=_legacy_type)
        puts = {mark_key(p): encode_mark(mark) for p, mark in legacy.items()}
        store.write(puts, deletes=[LEGACY_MARKS_KEY])

    def run_once(self) -> int:
        """Process what is available now; returns the number of lines consumed."""
        consumed = 0
        for chunk in self.reader.poll(self.batch_size):
            self._process(chunk)
            consumed += len(chunk.lines)
        finished, self.reader.finished = self.reader.finished, []
        for done in finished:
            self._retire(done)
        return consumed

    def run(self, stop: threading.Event) -> None:
        self.retry.stop = stop
        while not stop.is_set():
            if not self.run_once():
                stop.wait(self.idle_sleep_s)

    def _process(self, chunk: SpoolChunk) -> None:
        started = time.perf_counter()
        block = self.step.decode(chunk.lines, chunk.positions)
        # Control records split the chunk: the events before a delete are applied first,
        # and the chunk's mark goes with its last events, after every deletion in it.
        report = self.step.apply(
            block,
            marks=lambda: self._advance(chunk),
            delete=lambda segment: self._delete_user(chunk, segment),
        )
        if self.metrics is not None:  # as the Kafka runner counts its batches
            self.metrics.observe_report(report)
            self.metrics.observe_batch(block.events, block.bad, time.perf_counter() - started)

    def _advance(self, chunk: SpoolChunk) -> dict[bytes, bytes]:
        self.reader.advance(chunk)
        return self._marks(chunk.partition)

    def _delete_user(self, chunk: SpoolChunk, segment: Segment) -> None:
        if segment.control is None:
            return
        index = segment.end  # the deletion record's line
        offset = chunk.positions[index].offset
        self.reader.marks[chunk.partition] = (self._offset_after(chunk, index), offset)
        # Events of this user in other files, acknowledged before this deletion but not
        # read yet, must not bring the user back: they count as applied.
        # (Only then does the user keep a record: these read positions, no states.)
        applied_before = self.reader.lines_before(segment.control.before)
        if applied_before:
            applied_before[chunk.partition] = offset
        self.step.delete_user(segment, self._marks(chunk.partition), applied_before)

    def _retire(self, done: FinishedFile) -> None:
        """Delete a fully applied file whose writer is gone, then its progress key."""
        if done.torn_tail_bytes:
            logger.warning(
                "%s: skipping a torn last line of %d bytes (its writer died before "
                "acknowledging it)", done.path, done.torn_tail_bytes,
            )  # fmt: skip
        done.path.unlink(missing_ok=True)
        key = mark_key(done.partition)
        self.retry.call(lambda: self.engine.store.write({}, deletes=[key]), "retiring a file")
        self.reader.forget(done)
        self.stats.retired_files += 1
        if self.metrics is not None:
            self.metrics.spool_retired.inc()

    def _marks(self, partition: str) -> dict[bytes, bytes]:
        return {mark_key(partition): encode_mark(self.reader.marks[partition])}

    @staticmethod
    def _offset_after(chunk: SpoolChunk, index: int) -> int:
        # Byte offset just after line ``index`` of the chunk.
        tail = sum(len(line) for line in chunk.lines[index + 1 :])
        return chunk.end_offset - tail
