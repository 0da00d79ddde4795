"""The one pipeline step every runner takes: decode → dead letters → process → commit → stats.

The file replay, the spool runner and the Kafka runner differ in where lines come from and
how progress is committed (none for a file: progress lives in each user's record; spool marks
written atomically with the state; Kafka offsets committed after it). What they do with a
block of lines is the same, and lives here once:

1. **decode** the lines, cut at each deletion record (a stream that carries deletions);
2. **dead letters**: every bad event of the block goes to the dead-letter sink, counted by
   reason, before any state is written (so are the events a signal's own code fails on,
   ``BatchReport.rejected``, found while the batch is applied);
3. **process**: each segment's events through the engine, through a store outage
   (:class:`StoreRetry`), then the deletion that ends it;
4. **commit**: the runner's marks are written atomically with the block's last segment, and
   the runner's commit (Kafka offsets) runs once the block is written;
5. **stats**: one :class:`PipelineStats` for every runner.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from usersignals._core import lines_holding
from usersignals.closing import Closing, SupportsClose, close_all
from usersignals.events.decode import DecodeResult, EventDecoder
from usersignals.events.model import BadEvent, Event, Position
from usersignals.ingest.spool import CONTROL_MARK, DeleteUser, parse_control
from usersignals.processing.batch import BatchReport, MicroBatch
from usersignals.processing.engine import Engine
from usersignals.processing.python_signals import SIGNAL_FAILED
from usersignals.processing.read_ahead import ReadAhead
from usersignals.processing.store_retry import StoreRetry

T = TypeVar("T")

#: How many bad events the stats keep for display; every one is dead-lettered and counted.
KEEP_BAD = 1_000


class DeadLetterSink(Protocol):
    """Where rejected events go: a JSONL file or a Kafka topic."""

    def write(self, bad: list[BadEvent]) -> None: ...

    def close(self) -> None: ...


@dataclass
class PipelineStats:
    """What a runner has done so far; the same record for a file, the spool and Kafka."""

    batches: int = 0
    lines: int = 0
    blank: int = 0  # empty lines: skipped, but counted
    bad: int = 0
    bad_by_reason: dict[str, int] = field(default_factory=dict)
    bad_kept: list[BadEvent] = field(default_factory=list)  # the first KEEP_BAD, for display
    deleted_users: int = 0
    retired_files: int = 0  # spool files applied in full and removed
    seconds: float = 0.0  # a file replay's wall time (decode + process + write)
    report: BatchReport = field(default_factory=BatchReport)

    @property
    def events_per_second(self) -> float:
        return self.lines / self.seconds if self.seconds else 0.0

    def bad_said(self, noun: str = "bad") -> str:
        """``bad`` for a summary line: the events a signal's own code failed on are good
        events too (applied to the other signals), so they are said apart."""
        failed = self.bad_by_reason.get(SIGNAL_FAILED, 0)
        if not failed:
            return f"{self.bad:,} {noun}"
        return (
            f"{self.bad:,} {noun} ({failed:,} of them good events a signal's own code failed "
            "on: applied to the other signals)"
        )

    def count_bad(self, bad: list[BadEvent], keep: int = KEEP_BAD) -> None:
        self.bad += len(bad)
        for event in bad:
            self.bad_by_reason[event.reason] = self.bad_by_reason.get(event.reason, 0) + 1
        room = keep - len(self.bad_kept)
        self.bad_kept.extend(bad[: max(room, 0)])


@dataclass
class Segment:
    """Decoded events of a block up to a deletion (``control``: the deletion after them).

    ``end`` is the index, in the block, of the line after the segment's events: the deletion
    record's own line when there is one.
    """

    decoded: DecodeResult
    end: int
    control: DeleteUser | None = None
    #: Where the deletion was read (``positions[end]``), when there is one.
    control_position: Position | None = None


@dataclass
class Block:
    """A block of raw lines, decoded and cut at its deletions; ``lines`` counts them all.
    ``ahead``: its users' records, read ahead on the thread that decoded it (Kafka)."""

    segments: list[Segment]
    lines: int
    ahead: ReadAhead | None = None

    @property
    def bad(self) -> list[BadEvent]:
        return [event for segment in self.segments for event in segment.decoded.bad]

    @property
    def events(self) -> list[Event]:
        return [event for segment in self.segments for event in segment.decoded.events]


def decode_segments(
    decoder: EventDecoder, lines: Sequence[bytes], positions: Sequence[Position]
) -> list[Segment]:
    """``lines`` decoded and cut at every deletion record (the live path's, and an archive's:
    a topic export holds them too); the last segment may be empty."""
    segments: list[Segment] = []
    start = 0
    # A deletion names its op; the few lines that do are parsed (most events never are).
    # The core's scan takes a list; another sequence is copied into one.
    scanned = lines if isinstance(lines, list) else list(lines)
    for index in lines_holding(scanned, CONTROL_MARK):
        control = parse_control(lines[index])
        if control is not None:
            decoded = decoder.decode_block(lines[start:index], positions[start:index])
            segments.append(Segment(decoded, index, control, positions[index]))
            start = index + 1
    if start:
        lines, positions = lines[start:], positions[start:]
    segments.append(Segment(decoder.decode_block(lines, positions), start + len(lines)))
    return segments


#: Deletes a user after the events before it: the runner decides what it writes with it.
DeleteHook = Callable[[Segment], None]
#: The marks written atomically with a block's last segment, asked for when it is written.
MarksHook = Callable[[], Mapping[bytes, bytes]]


class PipelineStep:
    """Decodes a block, dead-letters its bad events, writes its good ones, counts it all.

    ``deletions``: whether the stream carries deletion records (the spool and Kafka do); in a
    file replay such a line is an event like any other, and rejected as one if malformed.
    ``retry``: how a runner rides out a store outage; without one (a one-off replay) a store
    error propagates at once. ``rewinds``: the source's offsets may go backwards (Kafka; see
    ``Engine.process``).
    """

    def __init__(
        self,
        engine: Engine,
        decoder: EventDecoder,
        dead_letters: DeadLetterSink,
        retry: StoreRetry | None = None,
        deletions: bool = True,
        rewinds: bool = False,
    ) -> None:
        self.engine = engine
        self.decoder = decoder
        self.dead_letters = dead_letters
        self.retry = retry
        self.deletions = deletions
        self.rewinds = rewinds
        self.stats = PipelineStats()

    def decode(self, lines: list[bytes], positions: list[Position]) -> Block:
        """Decode ``lines``, cut at every deletion record; the last segment may be empty."""
        if self.deletions:
            return Block(decode_segments(self.decoder, lines, positions), len(lines))
        decoded = self.decoder.decode_block(lines, positions)
        return Block([Segment(decoded, len(lines))], len(lines))

    def apply(
        self,
        block: Block,
        marks: MarksHook | None = None,
        delete: DeleteHook | None = None,
    ) -> BatchReport:
        """Dead letters first, then each segment and its deletion, in order; the marks go
        with the last segment, so they never claim a line whose effect is not written."""
        report = BatchReport()
        last = len(block.segments) - 1
        try:
            bad = block.bad
            if bad:
                self.dead_letters.write(bad)
                self.stats.count_bad(bad)
            for index, segment in enumerate(block.segments):
                written = marks() if marks is not None and index == last else None
                report.add(self.write(segment.decoded, written, block.ahead))
                if segment.control is not None:
                    (delete or self.delete_user)(segment)
        finally:
            self.engine.read_ahead.done(block.ahead)
        self.stats.batches += 1
        self.stats.lines += block.lines
        self.stats.blank += sum(segment.decoded.blank for segment in block.segments)
        return report

    def write(
        self,
        decoded: DecodeResult,
        marks: Mapping[bytes, bytes] | None,
        ahead: ReadAhead | None = None,
    ) -> BatchReport:
        """One engine write, retried through a store outage; an empty segment without marks
        writes nothing."""
        if not decoded.events and not marks:
            return BatchReport()
        batch = MicroBatch(decoded.events, decoded.positions)
        # Events a signal's own code failed on (the others applied them) are dead-lettered
        # before the batch is written; a retry after a store outage may write them twice.
        report = self._call(lambda: self._process(batch, marks, ahead), "writing a batch")
        if report.rejected:
            self.stats.count_bad(report.rejected)
        # The running total keeps counts only: a processor's rejected events would pile up
        # for as long as it runs (``bad_kept`` keeps the first ones for display).
        self.stats.report.add(dataclasses.replace(report, rejected=[]))
        return report

    def _process(
        self, batch: MicroBatch, marks: Mapping[bytes, bytes] | None, ahead: ReadAhead | None
    ) -> BatchReport:
        """One attempt at writing ``batch``. A failed one drops the read-ahead: the failure
        may be an outage long enough for another processor to take the partition over."""
        try:
            return self.engine.process(batch, marks, self.dead_letters.write, ahead, self.rewinds)
        except BaseException:
            if ahead is not None:
                ahead.dropped = True
            raise

    def delete_user(
        self,
        segment: Segment,
        marks: Mapping[bytes, bytes] | None = None,
        applied_before: Mapping[str, int] | None = None,
    ) -> None:
        if segment.control is None:
            return
        user_id = segment.control.user_id
        self._call(
            lambda: self.engine.delete_users([user_id], marks, applied_before), "deleting a user"
        )
        self.stats.deleted_users += 1

    def _call(self, operation: Callable[[], T], what: str) -> T:
        return operation() if self.retry is None else self.retry.call(operation, what)

    def close(self) -> None:
        self.dead_letters.close()


class PipelineRunner(Closing):
    """What the spool and Kafka runners share: their step, its stats, and what they own.

    A runner owns its step's dead-letter sink and whatever it is handed in ``owns`` (its
    consumer; the processor, so the store, that the composition root hands over): ``with
    runner:`` closes them all, whether the runner stopped or failed.
    """

    def __init__(self, step: PipelineStep, owns: Sequence[SupportsClose] = ()) -> None:
        self.step = step
        self.stats = step.stats
        self._owned = list(owns)

    @property
    def dead_letters(self) -> DeadLetterSink:
        return self.step.dead_letters

    def close(self) -> None:
        close_all([self.step, *self._owned])
