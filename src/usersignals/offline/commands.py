"""The ``usersignals backfill`` and ``usersignals training-set`` commands: options in, jobs out.

Registered on the main app in :mod:`usersignals.cli`; each parses its options into a job and
calls the library (local processes by default, Spark with ``--spark MASTER``).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from usersignals import consoles
from usersignals.aggregations.context import parse_time_option
from usersignals.config import Settings
from usersignals.errors import ConfigurationError
from usersignals.malloc_tuning import no_huge_pages
from usersignals.offline.backfill import BackfillJob, BackfillSummary
from usersignals.offline.common import select_signals, wait_for_workers
from usersignals.offline.stopping import terminated_as_interrupted
from usersignals.optional_deps import require_pyarrow
from usersignals.signals.registry import SignalRegistry, listed_names
from usersignals.uninterrupted import temporary_directory

if TYPE_CHECKING:  # imported when the command runs: it brings pyarrow
    from usersignals.offline.training import TrainingJob, TrainingSummary

console = consoles.console(stderr=True)

EventsOption = Annotated[
    str,
    typer.Option(
        "--events",
        help="The event archive: JSONL/Parquet file, directory (Hive partitions too) or glob.",
    ),
]
SignalsOption = Annotated[
    str | None, typer.Option("--signals", help="Signals module: dotted name or .py file.")
]
StoreOption = Annotated[
    str | None, typer.Option("--store", help="The state store directory [default: data/store].")
]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="A TOML settings file (see the README).")
]
WorkersOption = Annotated[
    int | None, typer.Option(help="Processes, each a shard of the users (default: the CPU count).")
]
SparkOption = Annotated[
    str | None,
    typer.Option("--spark", help="Run on Apache Spark at this master, e.g. local[4]."),
]
DeadLetterOption = Annotated[
    Path | None,
    typer.Option(
        help="Where bad records go, with the reason "
        "(backfill: STORE/dead-letter.jsonl; training-set: OUT.dead-letter.jsonl)."
    ),
]


def _settings(config: Path | None, store: str | None, signals: str | None) -> Settings:
    overrides: dict[str, Any] = {"signals": signals}
    if store is not None:
        overrides["store"] = {"path": store}
    return Settings.load(config, overrides=overrides)


def _workers(given: int | None) -> int:
    """``--workers``, or the CPU count when not given (a 0 given is refused by the job)."""
    return given if given is not None else os.cpu_count() or 1


#: The master URLs Spark takes (its SparkContext's forms); anything else it refuses only
#: once its JVM is up, in a page of Java and Python tracebacks.
_SPARK_MASTER = re.compile(
    r"local(\[(\*|[1-9]\d*)(,[1-9]\d*)?\])?|local-cluster\[\d+,\d+,\d+\]"
    r"|spark://[^/,:]+:\d+(,[^/,:]+:\d+)*|yarn|k8s://\S+|mesos://\S+"
)


def check_spark_master(master: str) -> None:
    """Refuse a ``--spark`` master Spark cannot parse, before any work."""
    if _SPARK_MASTER.fullmatch(master) is None:
        raise ConfigurationError(
            f"--spark {master!r} is not a Spark master: give local[N], local[*], "
            "spark://HOST:PORT, yarn or k8s://URL"
        )


#: How long a standalone master's port is tried, per host.
_MASTER_CONNECT_S = 3.0


def check_spark_master_answers(master: str) -> None:
    """Refuse a standalone master (``spark://HOST:PORT[,HOST:PORT]``) at none of whose hosts
    anything listens, before any work: Spark's driver retries one for about 70 s, printing
    each connection error, before the job fails. Other masters are Spark's to reach."""
    if not master.startswith("spark://"):
        return
    hosts = master.removeprefix("spark://").split(",")
    problems = []
    for host in hosts:
        name, _, port = host.rpartition(":")
        try:
            with socket.create_connection((name, int(port)), timeout=_MASTER_CONNECT_S):
                return
        except OSError as exc:
            problems.append(f"{host} ({exc.strerror or exc})")
    raise ConfigurationError(
        f"--spark {master!r}: no Spark master answers at {', '.join(problems)}: "
        "is it running, and is the address its web UI shows the one given?"
    )


def _spark(master: str, partitions: int) -> Any:
    from usersignals.offline.spark import spark_session

    return spark_session(master, partitions)


def backfill_command(
    events: EventsOption,
    signals: SignalsOption = None,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            help="NAME@VERSION, or NAME for its default version (repeatable): only these; "
            "other states are kept.",
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(help="Last event time to take: ISO 8601 with a zone, or ms since the epoch."),
    ] = None,
    workers: WorkersOption = None,
    spark: SparkOption = None,
    store: StoreOption = None,
    dead_letter: DeadLetterOption = None,
    commit_offsets: Annotated[
        bool,
        typer.Option(
            help="Commit the hand-over offsets for the processor's consumer group "
            "(kafka.group_id) if it has none yet, so it starts where the backfill stopped."
        ),
    ] = False,
    kafka: Annotated[
        str | None, typer.Option(help="Kafka bootstrap servers (for --commit-offsets).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Compute signals' states from an event archive and merge them into the store."""
    if spark is not None:
        check_spark_master(spark)
        check_spark_master_answers(spark)
    no_huge_pages()  # before the shards start: they inherit it
    settings = _settings(config, store, signals)
    until_ms = parse_time_option("until", until) if until else None
    dead = dead_letter or Path(settings.store.path) / "dead-letter.jsonl"
    job = BackfillJob(events, settings, tuple(only or ()), until_ms, _workers(workers), dead)
    with terminated_as_interrupted():
        summary = _run_backfill(job, spark)
        wait_for_workers()
    # Named: `--only NAME` backfills the name's default version, which the user may not know.
    chosen = select_signals(SignalRegistry.from_module(settings.signals), job.only)
    _print_backfill(summary, dead, [signal.key for signal in chosen.computed])
    _warn_if_nothing_valid(summary.events, summary.bad, dead)
    if commit_offsets:
        _hand_over(settings, summary, kafka)


def _run_backfill(job: BackfillJob, spark: str | None) -> BackfillSummary:
    """The backfill in this process's workers, or on a Spark cluster when one is named."""
    from usersignals.offline.backfill import backfill

    if spark is None:
        return backfill(job)
    from usersignals.offline.spark import backfill_spark

    session = _spark(spark, job.workers)
    try:
        with temporary_directory("usersignals-states-") as states:
            return backfill_spark(session, job, Path(states) / "states")
    finally:
        session.stop()


def _repeated(repeats: int) -> str:
    """The repeated event ids dropped (counted among the events read, as `replay` counts
    them), when there were any."""
    return f"; {repeats:,} repeated event ids dropped" if repeats else ""


def _deleted(deletions: int) -> str:
    """The deletion records applied, when the archive has any."""
    if not deletions:
        return ""
    return f"; {deletions:,} user deletions applied (their earlier events left out)"


def _print_backfill(summary: BackfillSummary, dead_letter: Path, keys: list[str]) -> None:
    console.print(
        f"backfilled {summary.events:,} events into {summary.users:,} users "
        f"({', '.join(keys)}) in "
        f"{summary.seconds:.1f} s ({summary.events_per_second:,.0f} events/s); "
        f"{summary.after_boundary:,} after the boundary and {summary.left_to_stream:,} past the "
        f"stored progress left to the stream; {summary.bad:,} bad"
        f"{_repeated(summary.report.repeats)}{_deleted(summary.deletions)}",
        markup=False,
    )
    _warn_of_signal_failures(len(summary.report.rejected), dead_letter)
    if summary.behind_stream:
        console.print(
            f"warning: for {summary.behind_stream:,} users the stored progress is beyond the "
            "archive's last offset: the events in between are in no backfilled state "
            "(export more history to close the gap)",
            markup=False,
        )
    if summary.stream_ahead:
        console.print(
            f"warning: for {summary.stream_ahead:,} users the store holds events the stream "
            "applied after the archive's last event for them (by their event-id "
            "fingerprints): the backfilled states miss those events (export more history, "
            "with Kafka coordinates to hand over exactly)",
            markup=False,
        )
    if summary.uncovered_partitions:
        listing = ", ".join(
            f"{partition} ({users:,} users)"
            for partition, users in sorted(summary.uncovered_partitions.items())
        )
        console.print(
            f"warning: the store's progress names partitions the archive holds no event of: "
            f"{listing}; the backfilled signals miss those users' events there, and the stream "
            "will not apply them (export the whole topic)",
            markup=False,
        )
    if not summary.complete:
        console.print(
            "not recorded as the versions' history: `signals plan` still asks for a backfill",
            markup=False,
        )
    if summary.offsets:
        listing = ", ".join(f"{p}@{o}" for p, o in sorted(summary.offsets.items()))
        console.print(f"the stream continues at: {listing}", markup=False)


def _warn_if_nothing_valid(events: int, bad: int, dead_letter: Path) -> None:
    """A job that found no valid event in a non-empty archive (times as floats, another
    format) ends as any job does, but says so."""
    if bad and not events:
        console.print(
            f"warning: no record of the archive was a valid event ({bad:,} bad; their "
            f"reasons are in {dead_letter})",
            markup=False,
        )


def _hand_over(settings: Settings, summary: BackfillSummary, kafka: str | None) -> None:
    """Commit the backfill's offsets for the processor's group, when that is safe."""
    from usersignals.offline.handover import commit_backfill_offsets

    if kafka is not None:
        settings.kafka.bootstrap_servers = kafka
    group = settings.kafka.group_id
    if summary.left_to_stream:
        # Some users' stored progress is below the hand-over offsets: the stream must
        # still apply their events from there, so it may not skip ahead.
        console.print(
            f"not committing offsets for {group}: {summary.left_to_stream:,} events are "
            "left to the stream below them",
            markup=False,
        )
    elif commit_backfill_offsets(settings.kafka, summary.offsets):
        console.print(f"committed them for consumer group {group}", markup=False)
    else:
        console.print(
            f"consumer group {group} keeps its own offsets (it has some, or there are "
            "none to hand over); per-user progress drops what the backfill covered",
            markup=False,
        )


def training_set_command(
    labels: Annotated[
        Path, typer.Option("--labels", help="Parquet: a user id and a time per row, and more.")
    ],
    events: EventsOption,
    out: Annotated[Path, typer.Option("--out", help="The Parquet file to write.")],
    signals: SignalsOption = None,
    context: Annotated[
        list[str] | None,
        typer.Option(
            "--context", help="Request context, e.g. window=7d,actions=save (repeatable)."
        ),
    ] = None,
    signal: Annotated[
        list[str] | None,
        typer.Option(
            "--signal",
            "-s",
            help="A column per signal: NAME (its served version) or NAME@VERSION (a shadow "
            "version too); repeatable, or separated by commas. Default: every served signal.",
        ),
    ] = None,
    user_column: Annotated[str, typer.Option(help="The labels' user id column.")] = "user_id",
    time_column: Annotated[str, typer.Option(help="The labels' time column.")] = "ts",
    workers: WorkersOption = None,
    spark: SparkOption = None,
    store: StoreOption = None,
    dead_letter: DeadLetterOption = None,
    config: ConfigOption = None,
) -> None:
    """Each label row's signals as they would have been served at its time (point in time)."""
    if spark is not None:
        check_spark_master(spark)
        check_spark_master_answers(spark)
    _check_parquet_installed()
    from usersignals.offline.training import TrainingJob

    no_huge_pages()  # before the shards start: they inherit it
    settings = _settings(config, store, signals)
    dead = dead_letter or out.with_suffix(".dead-letter.jsonl")
    # The output's own dead letters are replaced with it; a file given is appended to.
    with nullcontext(dead) if dead_letter else _replaced_with_the_output(dead) as writing:
        job = TrainingJob(
            labels, events, settings, out, tuple(context or ()), _workers(workers),
            user_column, time_column, writing, signals=tuple(listed_names(signal or [])),
        )  # fmt: skip
        with terminated_as_interrupted():
            summary = _run_training(job, spark)
            wait_for_workers()
    console.print(
        f"wrote {summary.rows:,} label rows to {out} in {summary.seconds:.1f} s "
        f"({summary.events:,} events, {summary.bad:,} bad{_deleted(summary.deletions)})",
        markup=False,
    )
    _warn_if_nothing_valid(summary.events, summary.bad, dead)
    _warn_of_signal_failures(summary.signal_failed, dead)
    _warn_of_nulls(summary)


def _run_training(job: TrainingJob, spark: str | None) -> TrainingSummary:
    """The training set in this process's workers, or on a Spark cluster when one is named
    (its inputs read and checked before Spark's JVM starts)."""
    from usersignals.offline.training import training_inputs, training_set

    if spark is None:
        return training_set(job)
    from usersignals.offline.spark import training_set_spark

    inputs = training_inputs(job)
    session = _spark(spark, job.workers)
    try:
        return training_set_spark(session, inputs)
    finally:
        session.stop()


@contextmanager
def _replaced_with_the_output(dead_letters: Path) -> Iterator[Path]:
    """Where a training set writes its own dead letters (``OUT.dead-letter.jsonl``): beside
    it, moved over it when the job ends well, as the features file is; a run refused or
    stopped leaves the previous run's pair as it was. (Deleted up front, a refused run lost
    the dead letters of the output it kept.)"""
    partial = dead_letters.with_name(f".{dead_letters.name}.partial-{os.getpid()}")
    try:
        yield partial
        if partial.exists():
            os.replace(partial, dead_letters)
        else:  # no bad record this run
            dead_letters.unlink(missing_ok=True)
    finally:
        partial.unlink(missing_ok=True)


def _warn_of_nulls(summary: TrainingSummary) -> None:
    if summary.refused:
        console.print(
            f"warning: {summary.refused:,} values are null: the API refuses them at their "
            "label's time too (a context's until before the user's newer events)",
            markup=False,
        )
    if summary.rows_without_values:
        console.print(
            f"warning: {summary.rows_without_values:,} label rows have no user (or one the API "
            "refuses: empty, or longer than events.max_user_id_chars) or no time: their "
            "features are null",
            markup=False,
        )


def _warn_of_signal_failures(count: int, dead_letter: Path) -> None:
    if count:
        console.print(
            f"warning: a signal's own code failed on {count:,} events: each left out of that "
            f"signal only, dead-lettered as signal_failed into {dead_letter}",
            markup=False,
        )


def _check_parquet_installed() -> None:
    """A training set reads its labels and writes its features as Parquet: without pyarrow
    (an optional dependency) it stops with the install that brings it, not a traceback."""
    require_pyarrow("a training set (it reads and writes Parquet)")
