"""Replaying a file of events through the engine: decode, dead-letter the bad, process."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from usersignals.events.decode import EventDecoder
from usersignals.events.model import BadEvent
from usersignals.ingest.dead_letter import DeadLetterFile
from usersignals.ingest.files import JsonlSource
from usersignals.processing.batch import BatchReport, MicroBatch
from usersignals.processing.engine import Engine


@dataclass
class ReplaySummary:
    lines: int = 0
    blank: int = 0  # empty lines: skipped, but counted
    seconds: float = 0.0
    report: BatchReport = field(default_factory=BatchReport)
    bad: list[BadEvent] = field(default_factory=list)
    bad_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def events_per_second(self) -> float:
        return self.lines / self.seconds if self.seconds else 0.0


def replay_file(
    source: JsonlSource,
    decoder: EventDecoder,
    engine: Engine,
    dead_letters: DeadLetterFile,
    progress: Callable[[int], None] | None = None,
    keep_bad: int = 1_000,
) -> ReplaySummary:
    """Process every line of ``source``; bad ones go to ``dead_letters`` with their reason.

    ``keep_bad`` bounds how many bad events the summary keeps for display; all of them are
    written to the dead-letter file and counted.
    """
    summary = ReplaySummary()
    started = time.perf_counter()
    for block, consumed in source.blocks():
        decoded = decoder.decode_block(block.lines, block.positions)
        if decoded.bad:
            dead_letters.write(decoded.bad)
            for bad in decoded.bad:
                summary.bad_by_reason[bad.reason] = summary.bad_by_reason.get(bad.reason, 0) + 1
            room = keep_bad - len(summary.bad)
            summary.bad.extend(decoded.bad[: max(room, 0)])
        summary.report.add(engine.process(MicroBatch(decoded.events, decoded.positions)))
        summary.lines += len(block.lines)
        summary.blank += decoded.blank
        if progress is not None:
            progress(consumed)
    summary.seconds = time.perf_counter() - started
    return summary
