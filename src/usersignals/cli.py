"""The ``usersignals`` command. Each command parses its options and calls the library."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn
from rich.table import Table
from rich.text import Text

# typer (pinned) carries its own copy of click, whose exceptions its commands raise.
from typer._click.exceptions import NoArgsIsHelpError, UsageError

from usersignals import consoles
from usersignals.aggregations.context import ReadContext, parse_time_option
from usersignals.app import build_processor, open_store_reader
from usersignals.config import Settings
from usersignals.errors import UserSignalsError
from usersignals.ingest.dead_letter import DeadLetterFile
from usersignals.ingest.files import JsonlSource
from usersignals.listening import check_can_listen
from usersignals.offline.commands import backfill_command, training_set_command
from usersignals.processing.pipeline import PipelineStats
from usersignals.processing.replay import replay_file
from usersignals.serving.reader import UserSignals, check_user_id
from usersignals.signals.registry import SignalRegistry, listed_names

if TYPE_CHECKING:
    from usersignals.demo import DemoResult, LiveService

# Help texts are plain text, never markup: they say "[default: data/store]", which rich's
# markup took for a tag and dropped.
app = typer.Typer(
    help="Real-time user signals for ML feature engineering.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
signals_app = typer.Typer(
    help="Work with signal definitions.", no_args_is_help=True, rich_markup_mode=None
)
tables_app = typer.Typer(
    help="Embedded enrichment tables.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(signals_app, name="signals")
app.add_typer(tables_app, name="tables")
# Offline: backfill from an event archive, point-in-time training sets.
app.command("backfill")(backfill_command)
app.command("training-set")(training_set_command)

console = consoles.console(stderr=True)
logger = logging.getLogger(__name__)
out = consoles.console()

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="A TOML settings file (see the README).")
]
StoreOption = Annotated[
    str | None, typer.Option("--store", help="The state store directory [default: data/store].")
]
SeedOption = Annotated[int, typer.Option(help="Random seed.")]
SignalsOption = Annotated[
    str | None,
    typer.Option("--signals", help="Signals module: dotted name or .py file."),
]


def _settings(config: Path | None, **overrides: Any) -> Settings:
    nested: dict[str, Any] = {}
    store = overrides.pop("store", None)
    if store is not None:
        nested["store"] = {"path": store}
    batch = overrides.pop("batch", None)
    if batch is not None:
        nested["processing"] = {"batch_size": batch}
    nested.update({k: v for k, v in overrides.items() if v is not None})
    return Settings.load(config, overrides=nested)


@app.command()
def generate(
    out_dir: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path(
        "data/workload"
    ),
    events: Annotated[int, typer.Option(min=0, help="Number of events.")] = 1_000_000,
    seed: SeedOption = 7,
    end: Annotated[
        str | None,
        typer.Option(
            help="Event time of the end: ISO 8601 with a zone, or ms since the epoch "
            "[default: now]."
        ),
    ] = None,
) -> None:
    """Write the seeded reference workload: events.jsonl and items.jsonl."""
    # Here, not at the top: the workload generator pulls in numpy, which the processor and
    # the API workers (started through this CLI) never use.
    from usersignals.demo import workload_spec
    from usersignals.ingest.synthetic import write_workload

    spec = workload_spec(events, seed, None if end is None else parse_time_option("end", end))
    with _progress() as progress:
        task = progress.add_task("generate", total=events)
        files = write_workload(spec, out_dir, progress=lambda n: progress.update(task, completed=n))
    console.print(
        f"wrote {files.events:,} events to {files.events_path} and "
        f"{files.items:,} items to {files.items_path}"
    )


@tables_app.command("load")
def tables_load(
    name: Annotated[str, typer.Argument(help="Table name, as in Lookup(NAME, ...).")],
    file: Annotated[Path, typer.Argument(help="A .jsonl, .csv or .parquet file.")],
    key: Annotated[str, typer.Option(help="The field that keys the records.")] = "item_id",
    type_: Annotated[
        list[str] | None,
        typer.Option(
            "--type",
            help="CSV: a column's kind, COLUMN=string|number|vector|json (repeatable).",
        ),
    ] = None,
    store: StoreOption = None,
    config: ConfigOption = None,
) -> None:
    """Load records into an embedded table that signals can enrich from."""
    from usersignals.assembly import open_store
    from usersignals.enrich.tables import check_table_input, load_table

    types: dict[str, str] = {}
    for declared in type_ or []:
        column, _, kind = declared.partition("=")
        if not column or not kind:
            raise typer.BadParameter(f"{declared!r}: use COLUMN=KIND", param_hint="--type")
        types[column] = kind
    check_table_input(file, types)  # before the store opens
    settings = _settings(config, store=store)
    state = open_store(settings)
    try:
        count = load_table(state.table(name), file, key, types=types)
    finally:
        state.close()
    console.print(f"loaded {count:,} records into table {name!r}")


@app.command()
def replay(
    events: Annotated[Path, typer.Argument(help="A JSONL file of events.")],
    signals: SignalsOption = None,
    store: StoreOption = None,
    batch: Annotated[
        int | None, typer.Option(min=1, help="Micro-batch size [default: 50000].")
    ] = None,
    dead_letter: Annotated[
        Path | None,
        typer.Option(help="Where bad events go [default: STORE/dead-letter.jsonl]."),
    ] = None,
    source_id: Annotated[
        str | None,
        typer.Option(
            help="Source id for idempotent replays [default: file:NAME, or file:NAME#<crc of "
            "its first line> for another file of a name replayed before]."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """Process a file of events into the store; bad events are reported and dead-lettered."""
    from usersignals.malloc_tuning import return_large_blocks

    return_large_blocks()  # as `run` does, before the store opens
    settings = _settings(config, store=store, batch=batch, signals=signals)
    source = JsonlSource(events, source_id, block_size=settings.processing.batch_size)
    path = dead_letter or Path(settings.store.path) / "dead-letter.jsonl"
    try:
        summary, failed = _replayed(settings, source, path)
    except KeyboardInterrupt:
        # Each batch is one write with its progress in the file: a replay again takes up
        # where this one stopped.
        console.print(
            "interrupted: every batch written before the stop is applied; replay the file "
            "again to go on (its applied events are skipped)",
            markup=False,
        )
        raise
    if as_json:
        document = {**_replay_document(summary, path), "lookup_failures": failed}
        sys.stdout.write(msgspec.json.encode(document).decode() + "\n")
    else:
        _print_replay(summary, path)
        if failed:  # else a source that failed reads as one that lacked the records
            console.print(
                f"lookup source failures (retries included; fields left missing): {failed}",
                markup=False,
            )


def _replayed(
    settings: Settings, source: JsonlSource, dead_letter: Path
) -> tuple[PipelineStats, dict[str, int]]:
    """``source`` replayed into the store with a progress bar: what it did, and the lookup
    sources' failures (retries included)."""
    from usersignals.processing.gc_tuning import tune_collector

    with (
        build_processor(settings) as processor,
        DeadLetterFile(dead_letter) as dead_letters,
        _progress(bytes_=True) as progress,
    ):
        # As `run` does once built: a replay is the processor's work on a file (200,000
        # reference events: 62,743 -> 70,786 events/s in bench/backfill.py's yardstick).
        tune_collector()
        processor.warn_of_empty_tables()
        task = progress.add_task("replay", total=source.size_bytes)
        summary = replay_file(
            source,
            processor.decoder,
            processor.engine,
            dead_letters,
            progress=lambda done: progress.update(task, completed=done),
        )
    lookups = processor.engine.materializer
    return summary, lookups.stats.failures_by_source if lookups is not None else {}


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or Ctrl-C: the runner finishes the batch in hand, then stops.

    SIGUSR1 prints every thread's stack to stderr and changes nothing else: how to find
    where a process that does not stop (or does not move) is waiting, without stopping it.
    """
    import faulthandler
    import os
    import signal as signals_module

    stop = threading.Event()
    # The handler only writes a byte to a pipe, and a thread of its own sets the event:
    # Python runs a handler in the main thread wherever it is, and one calling stop.set()
    # there deadlocked when that thread held the event's lock (Event.wait() holds it around
    # each wait; tests/unit/test_stop_on_signals.py).
    read_end, write_end = os.pipe()

    def set_when_signalled() -> None:
        os.read(read_end, 1)
        stop.set()

    threading.Thread(target=set_when_signalled, name="stop-on-signal", daemon=True).start()
    for name in (signals_module.SIGTERM, signals_module.SIGINT):
        signals_module.signal(name, lambda *_: os.write(write_end, b"\0"))
    faulthandler.register(signals_module.SIGUSR1, all_threads=True)
    return stop


@app.command()
def produce(
    kafka: Annotated[str, typer.Option(help="Kafka bootstrap servers.")],
    topic: Annotated[str, typer.Option(help="Topic to write.")] = "engagements",
    events: Annotated[int, typer.Option(min=0, help="Number of reference events.")] = 1_000_000,
    rate: Annotated[
        int, typer.Option(min=0, help="Events per second (0: as fast as possible).")
    ] = 0,
    seed: SeedOption = 7,
    partitions: Annotated[int, typer.Option(min=1, help="Partitions if the topic is created.")] = 6,
) -> None:
    """Write the reference workload into a Kafka topic, keyed by user id."""
    from usersignals.demo import workload_spec
    from usersignals.ingest.kafka_produce import produce_workload

    with _progress() as progress:
        task = progress.add_task("produce", total=events)
        sent = produce_workload(
            kafka, topic, workload_spec(events, seed), rate, partitions,
            progress=lambda n: progress.update(task, completed=n),
        )  # fmt: skip
    console.print(f"produced {sent:,} events to {topic}", markup=False)


@app.command()
def get(
    user: Annotated[str, typer.Argument(help="The user id.")],
    signal: Annotated[
        list[str] | None,
        typer.Option(
            "--signal", "-s", help="Signal name (repeatable, or names separated by commas)."
        ),
    ] = None,
    window: Annotated[str | None, typer.Option(help="e.g. 1h, 7d.")] = None,
    actions: Annotated[str | None, typer.Option(help="Comma-separated actions.")] = None,
    surfaces: Annotated[str | None, typer.Option(help="Comma-separated surfaces.")] = None,
    since: Annotated[str | None, typer.Option(help="ISO time with zone, or ms.")] = None,
    until: Annotated[str | None, typer.Option(help="ISO time with zone, or ms.")] = None,
    limit: Annotated[str | None, typer.Option(help="Max entries.")] = None,
    dedupe: Annotated[bool, typer.Option(help="One entry per item.")] = False,
    exclude: Annotated[str | None, typer.Option(help="Comma-separated item ids.")] = None,
    as_of: Annotated[str | None, typer.Option(help="Read as of this time.")] = None,
    signals: SignalsOption = None,
    store: StoreOption = None,
    config: ConfigOption = None,
) -> None:
    """Print one user's signals as JSON, with a request-time context."""
    context = ReadContext.parse(
        {
            "window": window,
            "actions": actions,
            "surfaces": surfaces,
            "since": since,
            "until": until,
            "limit": limit,
            "dedupe": "true" if dedupe else None,
            "exclude": exclude,
            "as_of": as_of,
        }
    )
    settings = _settings(config, store=store)
    check_user_id(user, settings.events.max_user_id_chars)
    reader = open_store_reader(settings, signals)
    try:
        result = reader.read(user, listed_names(signal or []) or None, context)
    finally:
        reader.store.close()
    out.print_json(msgspec.json.encode(result).decode())


@signals_app.command("compile")
def signals_compile(
    module: Annotated[str, typer.Argument(help="Dotted module name or .py file.")],
    output: Annotated[Path | None, typer.Option("--out", help="Write here, not stdout.")] = None,
) -> None:
    """Validate a module's signals and write their compiled definitions as stable JSON."""
    text = SignalRegistry.from_module(module).to_json()
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        console.print(f"wrote {output}")


@signals_app.command("preview")
def signals_preview(
    module: Annotated[str, typer.Argument(help="Dotted module name or .py file.")],
    events: Annotated[
        Path,
        typer.Option(
            "--events",
            help="Sample events: a JSONL or Parquet file, a directory or a glob (as backfill).",
        ),
    ],
    user: Annotated[
        list[str] | None,
        typer.Option("--user", "-u", help="Show this user (repeatable) [default: the busiest]."),
    ] = None,
    context: Annotated[
        list[str] | None,
        typer.Option("--context", "-c", help="A request parameter, e.g. window=1h (repeatable)."),
    ] = None,
    table: Annotated[
        list[str] | None,
        typer.Option("--table", "-t", help="An enrichment table: NAME=FILE (repeatable)."),
    ] = None,
    max_events: Annotated[
        int, typer.Option(min=1, help="Read at most this many events.")
    ] = 100_000,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, not tables.")] = False,
) -> None:
    """Run a module's signals over a sample of events in memory and print each answer."""
    from usersignals.preview import parse_pairs, preview

    tables = {name: Path(file) for name, file in parse_pairs(table or [], "--table").items()}
    result = preview(
        module,
        events,
        tables,
        users=user or [],
        context=parse_pairs(context or [], "--context"),
        max_events=max_events,
    )
    if as_json:
        document = {"events": result.events, "bad": result.bad, "users": result.users}
        sys.stdout.write(msgspec.json.encode(document).decode() + "\n")
        return
    bad = sum(result.bad.values())
    reasons = ", ".join(f"{reason} {count:,}" for reason, count in sorted(result.bad.items()))
    said = f"{bad:,} bad: {reasons}" if bad else "none bad"
    console.print(f"{result.events:,} good events read ({said}); as of the newest", markup=False)
    for user_id, answers in result.users.items():
        if not answers:
            console.print(f"{user_id}: no events in the sample", markup=False)
            continue
        _print_user("preview", ", ".join(context or []), UserSignals(user_id, answers))


@app.command()
def demo(
    directory: Annotated[Path, typer.Option("--dir", help="Working directory.")] = Path(
        "data/demo"
    ),
    events: Annotated[int, typer.Option(min=1, help="Reference events to replay first.")] = 200_000,
    seed: SeedOption = 7,
    port: Annotated[int, typer.Option(min=1, max=65_535, help="HTTP port of the API.")] = 8080,
    rate: Annotated[
        int, typer.Option(min=0, help="Live events per second while serving (0: none).")
    ] = 1_000,
    duration: Annotated[
        float | None,
        typer.Option(min=0, help="Stop after this many seconds [default: Ctrl-C]."),
    ] = None,
) -> None:
    """The quick start: replay the reference workload, then serve it with live events flowing."""
    import shutil

    from usersignals.demo import live_service

    # First: a port another server holds (a demo left running) had the demo read that
    # server, and print its answers as its own.
    check_can_listen("127.0.0.1", port, "--port")
    if directory.exists():
        shutil.rmtree(directory)
    started = time.perf_counter()
    result = _demo_replay(directory, events, seed)
    user = result.samples[0][2].user_id
    stop = _stop_on_signals()
    with live_service(directory, port, rate, seed) as live:
        ready_in = time.perf_counter() - started
        _print_demo_ready(live.base_url, user, rate, directory, ready_in, duration)
        _watch_live(live, user, stop, duration)
    # Read once the processor and the producer have stopped: both counts are final.
    produced, applied = live.produced[0], live.runner.stats.report.events
    waiting = produced - applied
    console.print(
        f"stopped: {produced:,} live events produced, {applied:,} applied by the processor"
        + (f" ({waiting:,} were still in the spool at the stop)" if waiting > 0 else "")
        + (f" ({-waiting:,} of them posted to the API)" if waiting < 0 else ""),
        markup=False,
    )


def _demo_replay(directory: Path, events: int, seed: int) -> DemoResult:
    """Generate and replay the demo workload with progress bars; print what it did."""
    from usersignals.demo import run_demo

    with _progress(shown=True) as progress:
        tasks: dict[str, Any] = {}

        def advance(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total, shown="")
            # Generating counts events; the replay reads the file, and counts its bytes.
            unit = "MB read" if stage == "replay" else "events"
            scale = 1e6 if stage == "replay" else 1
            fmt = ",.1f" if stage == "replay" else ",.0f"
            shown = f"{done / scale:{fmt}}/{total / scale:{fmt}} {unit}"
            progress.update(tasks[stage], completed=done, shown=shown)

        result = run_demo(directory, events, seed, advance)
    console.print(
        f"generated {result.workload.events:,} events and {result.workload.items:,} items; "
        f"loaded {result.items_loaded:,} items into the embedded table"
    )
    _print_replay(result.replay, directory / "dead-letter.jsonl")
    for why, context, signals in result.samples:
        _print_user(why, context, signals)
    return result


def _print_demo_ready(
    base: str, user: str, rate: int, directory: Path, seconds: float, duration: float | None
) -> None:
    flowing = f"while {rate:,} reference events/s flow in" if rate else "(no live events)"
    stopping = "Stop with Ctrl-C." if duration is None else f"Stops in {duration:g} s, or Ctrl-C."
    console.print(
        f"\nready in {seconds:.1f} s. The API is serving on {base} "
        f"(docs: {base}/docs) {flowing}. Try:\n"
        f"  curl '{base}/v1/users/{user}/signals?names=action_counts&window=1h'\n"
        f"  curl '{base}/v1/users/{user}/signals?names=recent_engagements"
        f"&actions=save,click&surfaces=search&dedupe=true&limit=5'\n"
        f'  curl -X POST {base}/v1/events -d \'{{"event_id":"e1","user_id":"me",'
        f'"item_id":"i00000001","action":"save","surface":"home",'
        f"\"ts\":'$(date +%s%3N)'}}'\n"
        f"  curl '{base}/v1/users/me/signals?names=recent_engagements'\n"
        f"  .venv/bin/usersignals get {user} --store {directory / 'store'} "
        f"--signal action_counts --window 1h\n"
        f"{stopping}",
        markup=False,
        soft_wrap=True,
    )


_PULSE_EVERY_S = 5.0


def _watch_live(
    live: LiveService, user: str, stop: threading.Event, duration: float | None
) -> None:
    """Until stopped: every few seconds, the featured user's counts as the API serves them."""
    from usersignals.demo import pulse
    from usersignals.serving.client import Client

    until = None if duration is None else time.monotonic() + duration
    previous: int | None = None
    with Client(live.base_url, timeout=2.0) as client:
        while not stop.is_set() and (until is None or time.monotonic() < until):
            now = pulse(client, user)
            age = "-" if now.age_ms is None else f"{now.age_ms / 1000:.1f} s"
            change = "" if previous is None else f" ({now.events_last_hour - previous:+,})"
            console.print(
                f"live: {user} has {now.events_last_hour:,} events in the last hour{change}, "
                f"the newest {age} old; {live.produced[0]:,} live events so far",
                markup=False,
                soft_wrap=True,
            )
            previous = now.events_last_hour
            left = (
                _PULSE_EVERY_S if until is None else min(_PULSE_EVERY_S, until - time.monotonic())
            )
            stop.wait(max(0.0, left))


def _replay_document(summary: PipelineStats, dead_letter: Path) -> dict[str, Any]:
    """The replay summary for programs: what ``_print_replay`` shows people."""
    report = summary.report
    return {
        "lines": summary.lines,
        "seconds": round(summary.seconds, 3),
        "events": report.events,
        "duplicates": report.duplicates,
        "user_writes": report.users,
        "expired": {k: v for k, v in report.expired.items() if v},
        "missing_enrichment": report.missing_enrichment,
        "signal_seconds": {k: round(v, 3) for k, v in report.signal_seconds.items()},
        "bad": summary.bad,
        "bad_by_reason": summary.bad_by_reason,
        "bad_events": [
            {
                "partition": bad.position.partition if bad.position else None,
                "offset": bad.position.offset if bad.position else None,
                "reason": bad.reason,
                "detail": bad.detail,
            }
            for bad in summary.bad_kept
        ],
        "dead_letter": str(dead_letter),
    }


def _print_replay(summary: PipelineStats, dead_letter: Path) -> None:
    report = summary.report
    console.print(
        f"replayed {summary.lines:,} lines in {summary.seconds:.1f} s "
        f"({summary.events_per_second:,.0f} events/s, decode + process + write): "
        f"{report.events:,} good events, {report.duplicates:,} already applied, "
        f"{report.users:,} user writes, {summary.bad_said()}, "
        f"{report.repeats:,} repeated event ids dropped, {summary.blank:,} blank lines skipped"
    )
    if report.signal_seconds:
        console.print(f"time in signals: {report.time_in_signals()}", markup=False)
    expired = {k: v for k, v in report.expired.items() if v}
    if expired:
        console.print(f"older than retention, dropped: {expired}", markup=False)
    if report.missing_enrichment:
        console.print(
            f"events with no enrichment record: {report.missing_enrichment}", markup=False
        )
    if summary.bad_kept:
        table = Table(title=f"bad events (all written to {dead_letter})")
        for column in ("where", "reason", "detail"):
            table.add_column(column)
        for bad in summary.bad_kept[:20]:
            where = f"{bad.position.partition}:{bad.position.offset}" if bad.position else "?"
            table.add_row(Text(where), Text(bad.reason), Text(bad.detail))
        console.print(table)
        console.print(f"bad events by reason: {summary.bad_by_reason}", markup=False)


def _print_user(why: str, context: str, signals: UserSignals) -> None:
    table = Table(title=f"{signals.user_id}: {why}" + (f"  [{context}]" if context else ""))
    table.add_column("signal")
    table.add_column("age")
    table.add_column("value (abridged)")
    for name, result in signals.signals.items():
        age = "-" if result.age_ms is None else f"{result.age_ms / 1000:,.0f} s"
        text = json.dumps(result.value)
        table.add_row(name, age, Text(text if len(text) <= 160 else text[:157] + "..."))
    out.print(table)


def _progress(bytes_: bool = False, shown: bool = False) -> Progress:
    """``shown``: each task says what it counts, in a ``shown`` field (events, MB read...)."""
    columns: list[Any] = [TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn()]
    if bytes_:
        columns.append(TransferSpeedColumn())
    elif shown:
        columns.append(TextColumn("{task.fields[shown]}"))
    else:
        columns.append(TextColumn("{task.completed:,.0f}/{task.total:,.0f}"))
    return Progress(*columns, console=console, transient=False)


def main() -> None:
    """Entry point: run the app, turning usersignals errors into one clear line and exit 2."""
    logging.basicConfig(
        level=os.environ.get("USERSIGNALS_LOG_LEVEL", "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        # Not standalone: click's own handling printed a usage error as a four-line block.
        code = app(standalone_mode=False)
    except NoArgsIsHelpError as exc:
        exc.show()  # the help, as when no command is given
        raise SystemExit(exc.exit_code) from None
    except UsageError as exc:
        where = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
        _print_error(exc.format_message() + where)
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:  # end of input at a prompt, or a command's typer.Abort
        console.print("Aborted!", markup=False)
        raise SystemExit(1) from None
    except UserSignalsError as exc:
        _print_error(str(exc))
        raise SystemExit(2) from None
    except _PATH_ERRORS as exc:  # a path of the wrong kind: a spool that is a file, say
        logger.debug("the command failed on a path", exc_info=True)  # USERSIGNALS_LOG_LEVEL
        _print_error(f"{exc.strerror}: {exc.filename!r}" if exc.filename else str(exc))
        raise SystemExit(2) from None
    if isinstance(code, int) and code:  # typer.Exit(code), returned: Ctrl-C's is 130
        raise SystemExit(code)


#: What a path given to a command can be wrong with: the user's to fix, in one line.
_PATH_ERRORS = (
    FileExistsError,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


def _print_error(message: str) -> None:
    # One line, whatever the terminal width, and never read as markup: messages quote user
    # input.
    console.print(Text.assemble(("error: ", "red"), message), soft_wrap=True)


# The processor's `run`, and the version commands (plan, apply, cutover, diff) and
# consistency, live in modules of their own, which add them to ``app`` and ``signals_app``:
# imported last, when both exist.
from usersignals import cli_run, cli_serve, cli_versions  # noqa: E402, F401
