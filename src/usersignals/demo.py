"""The quick-start job: generate the reference workload, load its items, replay, read back.

Composes the public pieces the way a user would; the CLI's ``demo`` command calls it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from usersignals.aggregations.context import ReadContext
from usersignals.app import build_processor, open_store_reader
from usersignals.config import Settings, StoreSettings
from usersignals.durations import DAY_MS
from usersignals.enrich.tables import load_table
from usersignals.ingest.dead_letter import DeadLetterFile
from usersignals.ingest.files import JsonlSource
from usersignals.ingest.synthetic import WorkloadFiles, WorkloadSpec, write_workload
from usersignals.processing.replay import ReplaySummary, replay_file
from usersignals.serving.reader import UserSignals


@dataclass
class DemoResult:
    workload: WorkloadFiles
    items_loaded: int
    replay: ReplaySummary
    samples: list[tuple[str, str, UserSignals]]  # (why this user, context, signals)


def workload_spec(events: int, seed: int, end_ms: int | None = None) -> WorkloadSpec:
    """A reference workload whose event times end at ``end_ms`` (default: now)."""
    base = WorkloadSpec(events=events, seed=seed)
    end = end_ms if end_ms is not None else time.time_ns() // 1_000_000
    return WorkloadSpec(events=events, seed=seed, start_ms=end - base.span_ms)


def run_demo(
    directory: Path,
    events: int,
    seed: int = 7,
    progress: Callable[[str, int, int], None] | None = None,
) -> DemoResult:
    """``progress(stage, done, total)`` is called as each stage advances."""
    spec = workload_spec(events, seed)
    workload = write_workload(
        spec,
        directory / "workload",
        progress=lambda n: progress("generate", n, events) if progress else None,
    )
    settings = Settings(store=StoreSettings(path=str(directory / "store")))
    processor = build_processor(settings)
    try:
        loaded = load_table(processor.store.table("items"), workload.items_path, key="item_id")
        source = JsonlSource(workload.events_path, block_size=settings.processing.batch_size)
        total = source.size_bytes
        with DeadLetterFile(directory / "dead-letter.jsonl") as dead_letters:
            summary = replay_file(
                source,
                processor.decoder,
                processor.engine,
                dead_letters,
                progress=lambda done: progress("replay", done, total) if progress else None,
            )
    finally:
        processor.close()

    reader = open_store_reader(settings)
    try:
        busiest = _busiest_user(workload)
        samples = [
            ("the busiest user, everything", "", reader.read(busiest, None, ReadContext())),
            (
                "the busiest user, saves and clicks on search in the last day, top 5",
                "window=1d actions=save,click surfaces=search limit=5",
                reader.read(
                    busiest,
                    ["recent_engagements", "action_counts", "category_interest"],
                    ReadContext(
                        window_ms=DAY_MS,
                        actions=frozenset({"save", "click"}),
                        surfaces=frozenset({"search"}),
                        limit=5,
                    ),
                ),
            ),
        ]
    finally:
        reader.store.close()
    return DemoResult(workload, loaded, summary, samples)


def _busiest_user(workload: WorkloadFiles) -> str:
    counts: dict[bytes, int] = {}
    with workload.events_path.open("rb") as handle:
        for line in handle:
            start = line.find(b'"user_id":"') + 11
            user = line[start : line.find(b'"', start)]
            counts[user] = counts.get(user, 0) + 1
    return max(counts, key=lambda user: counts[user]).decode()
