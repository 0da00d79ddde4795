"""Replaying a file of events through the engine: the pipeline step over a file's blocks.

A file has no commit of its own: each user's progress, written with their states, is what
makes a second replay of the same file change nothing (and the store's record of which file
a source id is, ``usersignals.ingest.file_sources``, what keeps another file of its name
from being taken for it).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from usersignals.events.decode import EventDecoder
from usersignals.ingest.file_sources import claim_source_id
from usersignals.ingest.files import JsonlSource
from usersignals.processing.engine import Engine
from usersignals.processing.pipeline import DeadLetterSink, PipelineStats, PipelineStep


def replay_file(
    source: JsonlSource,
    decoder: EventDecoder,
    engine: Engine,
    dead_letters: DeadLetterSink,
    progress: Callable[[int], None] | None = None,
) -> PipelineStats:
    """Process every line of ``source``; bad ones go to ``dead_letters`` with their reason.

    The stats keep the first bad events for display; all of them are written to the
    dead-letter sink and counted. The caller owns ``dead_letters`` and closes it.
    """
    # A replayed file is events only: a deletion record in it is rejected like any
    # malformed event, not carried out.
    step = PipelineStep(engine, decoder, dead_letters, deletions=False)
    started = time.perf_counter()
    source.source_id = claim_source_id(engine.store, source)
    for block, consumed in source.blocks():
        step.apply(step.decode(block.lines, block.positions))
        if progress is not None:
            progress(consumed)
    step.stats.seconds = time.perf_counter() - started
    return step.stats
