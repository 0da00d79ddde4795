"""Offline throughput: backfill and training-set generation, locally and on Spark local mode.

Method: write the seeded reference workload (``--events`` events, the published user and item
distributions) as a JSONL archive, and its item table into a RocksDB store. Then time, each
from a fresh store holding only the item table, wall clock, archive events / seconds:

1. the streaming engine on one core (``replay_file``: decode + engine + write), the yardstick;
2. ``backfill`` with 1 and with ``--workers`` processes (user shards, merged into the store);
3. ``training_set`` for ``--labels`` label rows at random times over random active users,
   the five reference signals, one context, with 1 and ``--workers`` processes;
4. with ``--spark``: both on Spark ``local[workers]`` (the session start is not counted; the
   first job of a session pays for Python worker start-up and is reported as run 1 of 2).

    .venv/bin/python bench/backfill.py                       # 200k events, 2 workers
    .venv/bin/python bench/backfill.py --events 500000 --spark
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from usersignals.app import build_processor
from usersignals.config import Settings
from usersignals.enrich.tables import load_table
from usersignals.ingest.dead_letter import DeadLetterFile
from usersignals.ingest.files import JsonlSource
from usersignals.ingest.synthetic import WorkloadSpec, write_workload
from usersignals.offline import BackfillJob, backfill
from usersignals.offline.training import TrainingJob, training_set
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


def report(
    what: str, events: int, seconds: float, cpu: float | None, baseline: float | None = None
) -> float:
    """Wall-clock rate, and the rate per CPU-second: on a shared machine the second moves less."""
    rate = events / seconds
    ratio = f" = {rate / baseline:.2f}x streaming" if baseline else ""
    per_cpu = f"  {events / cpu:>9,.0f} events/CPU-s" if cpu else "  (JVM CPU not counted)"
    print(f"  {what:<40} {seconds:7.1f} s  {rate:>9,.0f} events/s{ratio}{per_cpu}")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--labels", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--spark", action="store_true", help="also run on Spark local mode")
    args = parser.parse_args()

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
        settings = fresh_store(root, "streamed", files.items_path)
        processor = build_processor(settings)
        with DeadLetterFile(root / "dead.jsonl") as dead:
            started, cpu = time.perf_counter(), cpu_seconds()
            source = JsonlSource(files.events_path, block_size=settings.processing.batch_size)
            replay_file(source, processor.decoder, processor.engine, dead)
            seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
        processor.close()
        baseline = report("streaming engine (replay, 1 process)", files.events, seconds, cpu)

        runs = [1, args.workers] if args.workers > 1 else [1]
        for workers in runs:
            settings = fresh_store(root, f"backfill-{workers}", files.items_path)
            cpu = cpu_seconds()
            summary = backfill(BackfillJob(archive, settings, workers=workers))
            cpu = cpu_seconds() - cpu
            what = f"backfill, {workers} process(es)"
            report(what, summary.events, summary.seconds, cpu, baseline)
        settings = fresh_store(root, "training", files.items_path)
        for workers in runs:
            job = TrainingJob(
                labels, archive, settings, root / f"features-{workers}.parquet",
                contexts=("window=7d",), workers=workers,
            )  # fmt: skip
            cpu = cpu_seconds()
            result = training_set(job)
            cpu = cpu_seconds() - cpu
            what = f"training set, {workers} process(es)"
            report(what, result.events, result.seconds, cpu, baseline)
        if args.spark:
            run_spark(args, root, archive, labels, files.items_path, baseline)


def run_spark(
    args: argparse.Namespace, root: Path, archive: str, labels: Path, items: Path, baseline: float
) -> None:
    from usersignals.offline.spark import backfill_spark, spark_session, training_set_spark

    if "JAVA_HOME" not in os.environ and JAVA_17.exists():
        os.environ["JAVA_HOME"] = str(JAVA_17)
    started = time.perf_counter()
    spark = spark_session(f"local[{args.workers}]", args.workers)
    print(
        f"  (Spark local[{args.workers}] session started in {time.perf_counter() - started:.1f} s)"
    )
    try:
        for run in (1, 2):
            settings = fresh_store(root, f"spark-{run}", items)
            job = BackfillJob(archive, settings, workers=args.workers)
            summary = backfill_spark(spark, job, root / f"states-{run}")
            what = f"backfill on Spark, run {run} of 2"
            report(what, summary.events, summary.seconds, None, baseline)
        for run in (1, 2):
            job = TrainingJob(
                labels, archive, settings, root / f"spark-features-{run}.parquet",
                contexts=("window=7d",), workers=args.workers,
            )  # fmt: skip
            result = training_set_spark(spark, job)
            what = f"training set on Spark, run {run} of 2"
            report(what, result.events, result.seconds, None, baseline)
    finally:
        spark.stop()
    same = (root / "features-1.parquet").read_bytes() == (
        root / "spark-features-2.parquet"
    ).read_bytes()
    print(f"  Spark training set identical to the local one, byte for byte: {same}")


if __name__ == "__main__":
    main()
