"""The ``usersignals signals plan|apply|cutover|diff`` and ``usersignals consistency``
commands: reviewing and rolling out new signal versions, and checking online against offline.

Imported by :mod:`usersignals.cli`, whose ``app`` and ``signals_app`` they join.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from usersignals.aggregations.context import ReadContext
from usersignals.app import open_store_reader
from usersignals.assembly import open_store
from usersignals.cli import (
    ConfigOption,
    SignalsOption,
    StoreOption,
    _settings,
    app,
    console,
    out,
    signals_app,
)
from usersignals.signals.registry import SignalRegistry

if TYPE_CHECKING:  # the commands import the checks themselves, when run
    from usersignals.offline.consistency import ConsistencyReport
    from usersignals.offline.diff import DiffReport


@signals_app.command("plan")
def signals_plan(
    signals: SignalsOption = None,
    store: StoreOption = None,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, not a table.")] = False,
) -> None:
    """Show what the module would do to stored state: new, changed, removed, needs backfill.

    Compared with what `signals apply` last recorded in the store's version table.
    """
    from usersignals.offline.plan import stored_plan

    settings = _settings(config, store=store, signals=signals)
    registry = SignalRegistry.from_module(settings.signals)
    state = open_store(settings, read_only=True)
    try:
        plan = stored_plan(state, registry)
    finally:
        state.close()
    _print_plan(plan, as_json)


@signals_app.command("apply")
def signals_apply(
    signals: SignalsOption = None,
    store: StoreOption = None,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, not a table.")] = False,
) -> None:
    """Record the module's definitions in the store's version table.

    Refused when a definition changed without a new version, or a removed version is
    declared again.
    """
    from usersignals.offline.plan import apply_plan

    settings = _settings(config, store=store, signals=signals)
    registry = SignalRegistry.from_module(settings.signals)
    state = open_store(settings)
    try:
        plan = apply_plan(state, registry)
    finally:
        state.close()
    _print_plan(plan, as_json)
    removed = sum(change.kind == "removed" for change in plan.changes)
    console.print(
        f"applied: the store's version table records this module's {len(registry.computed):,} "
        f"version(s), and {removed:,} removal(s)",
        markup=False,
    )


@signals_app.command("cutover")
def signals_cutover(
    target: Annotated[str, typer.Argument(help="The version to serve by default: NAME@VERSION.")],
    grace: Annotated[
        str, typer.Option(help="Keep computing the old version this long, e.g. 1d.")
    ] = "1d",
    signals: SignalsOption = None,
    store: StoreOption = None,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, not a sentence.")] = False,
) -> None:
    """Serve NAME@VERSION by default from now on: one write, seen by every reader.

    The old version is still computed for the grace period, then its state is dropped.
    """
    from usersignals.durations import parse_duration
    from usersignals.errors import ConfigurationError
    from usersignals.state.versions import cut_over, load_backfilled, load_versions

    if "@" not in target:
        raise ConfigurationError(f"cutover {target!r}: name the version, e.g. {target}@2")
    try:
        grace_ms = parse_duration(grace)
    except ValueError as exc:
        raise ConfigurationError(f"--grace {grace!r}: {exc}") from None
    settings = _settings(config, store=store, signals=signals)
    registry = SignalRegistry.from_module(settings.signals)
    signal = registry.get(target)
    state = open_store(settings)
    try:
        # Read before the cut-over: once it is written, a failed read must not hide it.
        before = load_versions(state)
        backfilled = signal.key in load_backfilled(state)
        previous, table = cut_over(state, registry, signal, grace_ms)
    finally:
        state.close()
    # A cut back (within the grace period), or to the version served already (the cut-over's
    # or the module's default): nothing new.
    if not backfilled and previous is not signal and signal.key not in before.retired:
        console.print(
            f"warning: {signal.key} was never backfilled: its state holds the events since "
            "the processor began computing it; if its retention reaches further back, its "
            "answers miss the rest (backfill it, then cut over again)",
            markup=False,
        )
    old = previous.key if previous is not None and previous is not signal else None
    _say_cut_over(signal.key, old, table.retired.get(old or ""), as_json)


def _say_cut_over(served: str, old: str | None, drop_after_ms: int | None, as_json: bool) -> None:
    """What ``cutover`` did: ``served`` by default, in place of ``old`` (``None``: it was
    served already), whose grace period ends at ``drop_after_ms``."""
    from usersignals.durations import iso_utc

    drop_after = None if drop_after_ms is None else iso_utc(drop_after_ms, "seconds")
    if as_json:
        document = {
            "served": served,
            "previous": old,
            "drop_after_ms": drop_after_ms,
            "drop_after": drop_after,
        }
        sys.stdout.write(json.dumps(document) + "\n")
    elif old is None:
        # The version served already (a grace period asked for changes nothing).
        sys.stdout.write(f"{served} was served by default already: nothing changed\n")
    else:
        sys.stdout.write(
            f"{served} is served by default now, in place of {old}, which is computed "
            f"and answered when named until {drop_after}, then retired (its state dropped); "
            f"until then `signals cutover {old}` serves it again\n"
        )


@signals_app.command("diff")
def signals_diff(
    old: Annotated[str, typer.Argument(help="NAME@VERSION, e.g. interests@1.")],
    new: Annotated[str, typer.Argument(help="NAME@VERSION, e.g. interests@2.")],
    sample: Annotated[int, typer.Option(min=1, help="Compare this many users.")] = 1_000,
    context: Annotated[
        list[str] | None,
        typer.Option("--context", "-c", help="A request parameter, e.g. window=1h (repeatable)."),
    ] = None,
    signals: SignalsOption = None,
    store: StoreOption = None,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, not a table.")] = False,
) -> None:
    """Compare two versions of a signal over a sample of stored users."""
    from usersignals.offline.diff import diff_signals
    from usersignals.preview import parse_pairs

    read_context = ReadContext.parse(parse_pairs(context or [], "--context"))
    settings = _settings(config, store=store)
    reader = open_store_reader(settings, signals)
    try:
        report = diff_signals(
            reader, reader.registry.get(old), reader.registry.get(new), sample, read_context
        )
    finally:
        reader.store.close()
    if as_json:
        sys.stdout.write(json.dumps(report.to_json(), sort_keys=True) + "\n")
    else:
        _print_diff(report)
    _warn_of_diff(report)  # on stderr, with --json too


def _print_diff(report: DiffReport) -> None:
    """A diff's report as a table of the two versions' sizes, its counts, and a few changed
    users to look at."""
    table = Table("", report.old, report.new)
    for label, a, b in (
        ("users", report.old_distribution.users, report.new_distribution.users),
        ("mean size", report.old_distribution.mean, report.new_distribution.mean),
        ("p50 size", report.old_distribution.p50, report.new_distribution.p50),
        ("p90 size", report.old_distribution.p90, report.new_distribution.p90),
        ("max size", report.old_distribution.max, report.new_distribution.max),
    ):
        table.add_row(label, str(a), str(b))
    out.print(table)
    out.print(
        f"{report.changed:,} of {report.users:,} users changed ({report.changed_share:.1%}); "
        f"first entry the same for {report.same_first_entry:,}; only in {report.old}: "
        f"{report.only_old:,}, only in {report.new}: {report.only_new:,}",
        markup=False,
    )
    if report.newer_in_old or report.newer_in_new:
        out.print(
            f"newest event later in {report.old} for {report.newer_in_old:,} users, in "
            f"{report.new} for {report.newer_in_new:,} (a version backfilled from an archive "
            "that ends before the stream misses the stream's later events)",
            markup=False,
        )
    if report.examples:
        users = ", ".join(example["user_id"] for example in report.examples)
        out.print(f"changed users to look at (both values in --json): {users}", markup=False)


def _warn_of_diff(report: DiffReport) -> None:
    """What the diff could not compare: ignored parameters, refused users, an empty sample."""
    for key, names in report.ignored.items():
        console.print(
            f"warning: {key} ignores {', '.join(names)} (its aggregation does not take it): "
            "compared without",
            markup=False,
        )
    if report.refused:
        console.print(
            f"warning: {report.refused:,} sampled users cannot be answered exactly at this "
            f"view time (the API's 422), left out; one: {report.refusal}",
            markup=False,
        )
    if report.users and report.empty_in_both == report.users:
        console.print(
            "warning: every sampled user's answers are empty in both versions at this view "
            "time, so nothing was compared; if the events are older than the signals' "
            "windows, compare as of a time among them: --context as_of=TIME",
            markup=False,
        )


def _print_plan(plan: Any, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(plan.to_json(), sort_keys=True) + "\n")
        return
    table = Table("signal", "change", "needs backfill", "served", "detail")
    for change in plan.changes:
        backfill = "yes" if change.needs_backfill else ""
        table.add_row(change.key, change.kind, backfill, change.serving, change.detail)
    out.print(table)


def _print_mismatches(mismatches: list[dict[str, Any]]) -> None:
    """The first answers that differ, each with what `usersignals get` needs to read it
    again (the user, the time as --as-of, the request's context)."""
    if not mismatches:
        return
    out.print(f"the first {len(mismatches)} answers that differ:", markup=False)
    for shown in mismatches:
        context = ",".join(f"{k}={v}" for k, v in sorted(shown["context"].items()))
        lines = (
            f"  {shown['signal']}, {shown['where']} (context: {context or 'none'})",
            f"    online:  {_abridged(shown['online'])}",
            f"    offline: {_abridged(shown['offline'])}",
        )
        for line in lines:
            out.print(line, markup=False, soft_wrap=True)


def _abridged(value: Any, limit: int = 120) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@app.command()
def consistency(
    log: Annotated[Path, typer.Option("--log", help="A JSONL or Parquet log, or a folder.")],
    events: Annotated[str, typer.Option("--events", help="The event archive (as backfill).")],
    signals: SignalsOption = None,
    store: StoreOption = None,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, not a table.")] = False,
) -> None:
    """Recompute logged API answers offline and report the share that agree.

    Exactly, and within each aggregation's stated error.
    """
    from usersignals.errors import ConfigurationError
    from usersignals.offline.consistency import check_consistency

    if not log.exists():
        raise ConfigurationError(f"--log {str(log)!r} does not exist")
    settings = _settings(config, store=store, signals=signals)
    report = check_consistency(log, events, settings)
    if as_json:
        sys.stdout.write(json.dumps(report.to_json(), sort_keys=True) + "\n")
        return
    table = Table("signal", "answers", "exact", "within stated error")
    for key, agreement in sorted(report.per_signal.items()):
        table.add_row(
            key, f"{agreement.answers:,}", f"{agreement.exact:,}", f"{agreement.within_error:,}"
        )
    out.print(table)
    _print_mismatches(report.mismatches)
    _warn_of_uncompared(report)
    out.print(
        f"{report.answers:,} answers from {report.records:,} logged requests "
        f"({report.skipped:,} with as_of skipped): {report.exact_share:.2%} exact, "
        f"{report.within_error_share:.2%} within the stated error",
        markup=False,
    )
    differences = report.differences
    if sum(differences.values()):
        out.print(
            f"of the {sum(differences.values()):,} answers that differ: "
            f"{differences['behind']:,} behind (the archive holds an event of the user at or "
            "before the request that is newer than the answer's newest: not applied yet when "
            f"served), {differences['ahead']:,} ahead (the answer counted an event stamped "
            f"after the request), {differences['unexplained']:,} unexplained",
            markup=False,
        )


def _warn_of_uncompared(report: ConsistencyReport) -> None:
    """What the log held that was not compared, and why: so a share is read with its base."""
    if report.unreadable_lines:
        console.print(
            f"warning: {report.unreadable_lines:,} log lines unreadable, skipped (the first "
            f"{report.unreadable[0]})",
            markup=False,
        )
    if report.outdated:
        console.print(
            f"warning: {report.outdated:,} logged requests have a context this release "
            "refuses (an empty value, a time in seconds): not compared",
            markup=False,
        )
    if report.undeclared:
        listing = ", ".join(f"{key} ({n:,})" for key, n in sorted(report.undeclared.items()))
        console.print(
            f"warning: {sum(report.undeclared.values()):,} logged answers of signal versions "
            f"the module does not declare, not compared: {listing}",
            markup=False,
        )
