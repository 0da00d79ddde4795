"""Offline throughput: backfill and training-set generation, locally and on Spark local mode.

Method: write the seeded reference workload (``--events`` events, the published user and item
distributions) as a JSONL archive, and its item table into a RocksDB store. Then time, each
from a fresh store holding only the item table, wall clock, archive events / seconds:

1. the streaming engine on one core (``replay_file``: decode + engine + write, with the
   collector tuning of ``usersignals run``), the yardstick;
2. ``backfill`` with 1 and with ``--workers`` processes (user shards, merged into the store);
3. ``training_set`` for ``--labels`` label rows at random times over random active users,
   the five reference signals, one context, with 1 and ``--workers`` processes;
4. with ``--spark``: both on Spark ``local[workers]`` (the session start is not counted; the
   first job of a session pays for Python worker start-up and is reported as run 1 of 2).

The local jobs (1-3) run in ``--rounds`` rounds (3 by default), one job after the other in
each round, so a slow spell of the shared machine falls on every job alike; each job's figure
is its median over the rounds, with the lowest and highest beside it.

Then the issue's target, per job: its median events/s against the streaming engine's median
events/s on one core times the cores the job used (its processes, at most the machine's
cores), and the same ratio per CPU-second. Duration on the 2-core machine, otherwise idle:
about 1 min for the default (200k events, 20k labels, 2 workers, 3 rounds), and 1 min more
with ``--spark``.

    .venv/bin/python bench/backfill.py                       # 200k events, 2 workers
    .venv/bin/python bench/backfill.py --events 500000 --spark
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from usersignals.app import build_processor
from usersignals.config import Settings
from usersignals.enrich.tables import load_table
from usersignals.ingest.dead_letter import DeadLetterFile
from usersignals.ingest.files import JsonlSource
from usersignals.ingest.synthetic import WorkloadFiles, WorkloadSpec, write_workload
from usersignals.malloc_tuning import no_huge_pages
from usersignals.offline import BackfillJob, backfill
from usersignals.offline.training import TrainingJob, training_inputs, training_set
from usersignals.processing.gc_tuning import collector_tuned
from usersignals.processing.replay import replay_file

JAVA_17 = Path("/usr/lib/jvm/java-17-openjdk-amd64")


def fresh_store(root: Path, name: str, items: Path) -> Settings:
    settings = Settings.load(environ={}, overrides={"store": {"path": str(root / name)}})
    processor = build_processor(settings)
    try:
        load_table(processor.store.table("items"), items, key="item_id")
    finally:
        processor.close()
    return settings


def write_labels(path: Path, events: Path, count: int) -> None:
    rng = random.Random(5)
    users, times = [], []
    with events.open("rb") as handle:
        for line in handle:
            if rng.random() < 0.05:
                users.append(line.split(b'"user_id":"', 1)[1].split(b'"', 1)[0].decode())
                times.append(int(line.split(b'"ts":', 1)[1].split(b",", 1)[0]))
    low, high = min(times), max(times)
    pq.write_table(
        pa.table(
            {
                "user_id": [rng.choice(users) for _ in range(count)],
                "ts": [rng.randint(low, high) for _ in range(count)],
                "label": [rng.random() < 0.1 for _ in range(count)],
            }
        ),
        path,
    )


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the local workers)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


@dataclass(frozen=True)
class Run:
    """One timed run of a job: the events it took, wall-clock and CPU seconds."""

    events: int
    seconds: float
    cpu: float


@dataclass(frozen=True)
class Rate:
    what: str
    #: Processes (local) or Spark task slots the job ran with; the cores it could use.
    cores: int
    per_second: float
    #: Events per CPU-second of this process and its workers; None on Spark (JVM not counted).
    per_cpu_second: float | None


def measured(what: str, cores: int, events: int, seconds: float, cpu: float | None) -> Rate:
    """Print one job's wall-clock rate, and its rate per CPU-second (on a shared machine the
    second moves less), and return both."""
    rate = Rate(what, cores, events / seconds, events / cpu if cpu else None)
    per_cpu = (
        f"{rate.per_cpu_second:>9,.0f} events/CPU-s"
        if rate.per_cpu_second
        else "(JVM CPU not counted)"
    )
    print(f"  {what:<40} {seconds:7.1f} s  {rate.per_second:>9,.0f} events/s  {per_cpu}")
    return rate


def measured_rounds(what: str, cores: int, runs: list[Run]) -> Rate:
    """A local job's median rates over its rounds, printed with their range."""
    walls = sorted(run.events / run.seconds for run in runs)
    cpus = sorted(run.events / run.cpu for run in runs)
    rate = Rate(what, cores, statistics.median(walls), statistics.median(cpus))
    print(
        f"  {what:<40} {rate.per_second:>9,.0f} events/s ({walls[0]:,.0f}-{walls[-1]:,.0f})  "
        f"{rate.per_cpu_second:>9,.0f} events/CPU-s ({cpus[0]:,.0f}-{cpus[-1]:,.0f})"
    )
    return rate


def print_targets(streaming: Rate, jobs: list[Rate]) -> None:
    """The issue's target: each job at least the streaming engine's rate per core (its run
    on one core) times the cores the job used; on wall clock, and per CPU-second."""
    cores = os.cpu_count() or 1
    print(
        "\ntarget: >= streaming rate per core x cores used "
        f"(streaming: {streaming.per_second:,.0f} events/s on 1 core"
        + (f", {streaming.per_cpu_second:,.0f} events/CPU-s)" if streaming.per_cpu_second else ")")
    )
    for job in jobs:
        used = min(job.cores, cores)
        target = streaming.per_second * used
        line = (
            f"  {job.what:<40} {used} core(s): {job.per_second:>9,.0f} vs target "
            f"{target:>9,.0f} events/s = {job.per_second / target:4.2f}x"
        )
        if job.per_cpu_second and streaming.per_cpu_second:
            ratio = job.per_cpu_second / streaming.per_cpu_second
            line += f"; per CPU-second {ratio:4.2f}x"
        print(line + ("  (met)" if job.per_second >= target else "  (NOT met)"))
    if any(job.cores > cores for job in jobs):
        print(f"  (jobs with more processes than the {cores} cores are held to {cores} cores)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--labels", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--spark", action="store_true", help="also run on Spark local mode")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the local jobs")
    args = parser.parse_args()
    no_huge_pages()  # as `usersignals backfill` and `training-set` do

    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as scratch:
        root = Path(scratch)
        files = write_workload(WorkloadSpec(events=args.events), root / "workload")
        archive = str(files.events_path)
        labels = root / "labels.parquet"
        write_labels(labels, files.events_path, args.labels)
        print(
            f"archive: {files.events:,} reference events (JSONL), {files.items:,} items; "
            f"{args.labels:,} labels; 5 reference signals; {os.cpu_count()} cores "
            "(shared; figures move ±30 % between runs)"
        )
        runs = [1, args.workers] if args.workers > 1 else [1]
        timed: dict[str, tuple[int, list[Run]]] = {}
        for round_number in range(args.rounds):
            for what, cores, job in local_jobs(root, files, labels, runs, round_number):
                timed.setdefault(what, (cores, []))[1].append(job())
        print(f"local jobs: median of {args.rounds} rounds (lowest-highest)")
        rates = [measured_rounds(what, cores, done) for what, (cores, done) in timed.items()]
        streaming, jobs = rates[0], rates[1:]
        if args.spark:
            jobs += run_spark(args, root, archive, labels, files.items_path)
        print_targets(streaming, jobs)


def local_jobs(
    root: Path, files: WorkloadFiles, labels: Path, runs: list[int], round_number: int
) -> list[tuple[str, int, Callable[[], Run]]]:
    """The local jobs of one round: (name, cores, a function that sets the job up from a
    fresh store, then runs and times it)."""
    archive = str(files.events_path)

    def timed(job: Callable[[], int]) -> Run:
        started, cpu = time.perf_counter(), cpu_seconds()
        events = job()
        seconds = time.perf_counter() - started
        # The job returns while its workers exit (its ShardPool does not wait for them); their
        # CPU counts once they are reaped.
        reaped_by = time.monotonic() + 60
        while multiprocessing.active_children() and time.monotonic() < reaped_by:
            time.sleep(0.01)
        return Run(events, seconds, cpu_seconds() - cpu)

    def streaming() -> Run:
        settings = fresh_store(root, f"streamed-{round_number}", files.items_path)
        processor = build_processor(settings)
        source = JsonlSource(files.events_path, block_size=settings.processing.batch_size)
        # With the collector tuning `usersignals run` applies (the offline shards have it too).
        with DeadLetterFile(root / "dead.jsonl") as dead, collector_tuned():

            def replay() -> int:
                replay_file(source, processor.decoder, processor.engine, dead)
                return files.events

            run = timed(replay)
        processor.close()
        return run

    def backfilling(workers: int) -> Callable[[], Run]:
        def job() -> Run:
            settings = fresh_store(root, f"backfill-{workers}-{round_number}", files.items_path)
            return timed(lambda: backfill(BackfillJob(archive, settings, workers=workers)).events)

        return job

    def training(workers: int) -> Callable[[], Run]:
        def job() -> Run:
            settings = fresh_store(root, f"training-{workers}-{round_number}", files.items_path)
            out = root / f"features-{workers}.parquet"
            job = TrainingJob(labels, archive, settings, out, ("window=7d",), workers=workers)
            return timed(lambda: training_set(job).events)

        return job

    return [
        ("streaming engine (replay, 1 process)", 1, streaming),
        *((f"backfill, {w} process(es)", w, backfilling(w)) for w in runs),
        *((f"training set, {w} process(es)", w, training(w)) for w in runs),
    ]


def run_spark(
    args: argparse.Namespace, root: Path, archive: str, labels: Path, items: Path
) -> list[Rate]:
    """The second run of each job on Spark (the first pays for Python worker start-up)."""
    from usersignals.offline.spark import backfill_spark, spark_session, training_set_spark

    if "JAVA_HOME" not in os.environ and JAVA_17.exists():
        os.environ["JAVA_HOME"] = str(JAVA_17)
    started = time.perf_counter()
    spark = spark_session(f"local[{args.workers}]", args.workers)
    print(
        f"  (Spark local[{args.workers}] session started in {time.perf_counter() - started:.1f} s)"
    )
    rates = []
    try:
        for run in (1, 2):
            settings = fresh_store(root, f"spark-{run}", items)
            job = BackfillJob(archive, settings, workers=args.workers)
            summary = backfill_spark(spark, job, root / f"states-{run}")
            what = f"backfill on Spark, run {run} of 2"
            rate = measured(what, args.workers, summary.events, summary.seconds, None)
        rates.append(rate)
        for run in (1, 2):
            training = TrainingJob(
                labels, archive, settings, root / f"spark-features-{run}.parquet",
                contexts=("window=7d",), workers=args.workers,
            )  # fmt: skip
            result = training_set_spark(spark, training_inputs(training))
            what = f"training set on Spark, run {run} of 2"
            rate = measured(what, args.workers, result.events, result.seconds, None)
        rates.append(rate)
    finally:
        spark.stop()
    same = (root / "features-1.parquet").read_bytes() == (
        root / "spark-features-2.parquet"
    ).read_bytes()
    print(f"  Spark training set identical to the local one, byte for byte: {same}")
    return rates


if __name__ == "__main__":
    main()
