"""The version commands as a user runs them: signals plan / apply / diff / cutover."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from offline_helpers import (
    History,
    new_store,
    random_history,
    settings_for,
    stream,
    write_jsonl_archive,
)
from test_versions import module

from usersignals import SignalRegistry
from usersignals.offline import BackfillJob, backfill

BIN = Path(sys.executable).parent / "usersignals"
V1 = 'SIGNALS = [clicks, interests(1, "7d")]\n'
SHADOWED = 'SIGNALS = [clicks, interests(1, "7d"), interests(2, "3d", True)]\n'


@pytest.fixture(scope="module")
def history() -> History:
    return random_history(23, events=800, users=30)


def cli(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == code, done.stderr
    return done


def plan(store: Path, signals: str) -> dict[str, dict[str, Any]]:
    done = cli("signals", "plan", "--signals", signals, "--store", str(store), "--json")
    return {change["key"]: change for change in json.loads(done.stdout)["changes"]}


def streamed(path: Path, history: History, signals: str) -> Path:
    store = new_store(path, history)
    try:
        stream(store, history, 71, registry=SignalRegistry.from_module(signals))
    finally:
        store.close()
    return path


def test_plan_and_apply_show_and_record_what_a_module_change_does(
    tmp_path: Path, history: History
) -> None:
    v1 = module(tmp_path, "v1", V1)
    store = streamed(tmp_path / "store", history, v1)
    # Nothing recorded yet: the deployed signals' states are already there.
    first = plan(store, v1)
    assert first["clicks@1"]["kind"] == "new"
    assert first["clicks@1"]["needs_backfill"] is False
    assert first["interests@1"]["serving"] == "default"
    applied = cli("signals", "apply", "--signals", v1, "--store", str(store))
    # Said, not only the plan's table again (found in a newcomer's trial).
    assert "applied: the store's version table records this module's 2 version(s)" in (
        " ".join(applied.stderr.split())
    )
    assert {c["kind"] for c in plan(store, v1).values()} == {"unchanged"}

    shadowed = plan(store, module(tmp_path, "shadowed", SHADOWED))
    assert shadowed["interests@2"]["kind"] == "new"
    assert shadowed["interests@2"]["needs_backfill"] is True
    assert shadowed["interests@2"]["serving"] == "shadow"
    assert shadowed["interests@1"]["kind"] == "unchanged"

    edited = module(tmp_path, "edited", 'SIGNALS = [interests(1, "5d")]\n')
    changes = plan(store, edited)
    assert changes["interests@1"]["kind"] == "changed"
    assert changes["clicks@1"]["kind"] == "removed"
    refused = cli("signals", "apply", "--signals", edited, "--store", str(store), code=2)
    assert "bump the version" in refused.stderr
    # The refused apply recorded nothing.
    assert {c["kind"] for c in plan(store, v1).values()} == {"unchanged"}


def test_diff_compares_two_versions_over_stored_users_then_cutover_serves_the_new(
    tmp_path: Path, history: History
) -> None:
    shadowed = module(tmp_path, "shadowed", SHADOWED)
    store = streamed(tmp_path / "store", history, shadowed)
    common = ["--signals", shadowed, "--store", str(store), "--json"]
    # As of the history's end: it lies months back, past the retention from today.
    end = str(max(event.ts for event in history.events))
    done = cli(
        "signals", "diff", "interests@1", "interests@2", "--sample", "20",
        "--context", f"as_of={end}", *common,
    )  # fmt: skip
    report = json.loads(done.stdout)
    assert report["users"] == 20
    assert report["empty_in_both"] < 20
    assert 0 < report["changed"] <= 20  # a 3 d half-life reorders or rescales some profiles
    assert report["old_distribution"]["users"] == report["new_distribution"]["users"] == 20
    assert report["examples"][0]["old"] != report["examples"][0]["new"]
    same = json.loads(
        cli(
            "signals", "diff", "interests@1", "interests@1", "--context", f"as_of={end}", *common
        ).stdout
    )
    assert same["changed"] == 0
    # Every user of the history holds an interests state (weight 0 for other actions).
    assert same["users"] == len({event.user_id for event in history.events})
    # Without as_of, the view is today's, months past the history: every answer is empty,
    # and a comparison of nothing says so rather than "0 changed".
    now = cli("signals", "diff", "interests@1", "interests@2", *common[:-1])
    assert "every sampled user's answers are empty in both" in " ".join(now.stderr.split())
    # With --json too, on stderr (found in a newcomer's trial: JSON said nothing of it).
    now = cli("signals", "diff", "interests@1", "interests@2", *common)
    assert "every sampled user's answers are empty in both" in " ".join(now.stderr.split())
    # The table names a few changed users to look at, and warns of an ignored parameter.
    table = cli(
        "signals", "diff", "interests@1", "interests@2", "--context", f"as_of={end}",
        "--context", "window=7d", *common[:-1],
    )  # fmt: skip
    assert (
        f"changed users to look at (both values in --json): {report['examples'][0]['user_id']}"
        in (" ".join(table.stdout.split()))
    )
    assert "warning: interests@1 ignores window" in table.stderr

    user = report["examples"][0]["user_id"]
    get = [
        "get", user, "--signal", "interests", "--as-of", end, "--signals", shadowed,
        "--store", str(store),
    ]  # fmt: skip
    assert json.loads(cli(*get).stdout)["signals"]["interests"]["version"] == 1
    # To the version served already (the module's default, never cut over to): nothing is
    # new, nothing to warn of (found in review: it warned that v1 was never backfilled).
    same = cli("signals", "cutover", "interests@1", "--grace", "1h", "--json", *common[:-1])
    assert "never backfilled" not in same.stderr
    assert json.loads(same.stdout)["previous"] is None
    # Said so, not a silent document (a newcomer's trial).
    said = cli("signals", "cutover", "interests@1", *common[:-1]).stdout
    assert said == "interests@1 was served by default already: nothing changed\n"
    cutover = cli("signals", "cutover", "interests@2", "--grace", "1h", "--json", *common[:-1])
    # Streamed, never backfilled: said, as the cut-over is not refused for it.
    assert "warning: interests@2 was never backfilled" in cutover.stderr
    moved = json.loads(cutover.stdout)
    assert moved["served"] == "interests@2"
    assert moved["previous"] == "interests@1"
    assert moved["drop_after"].endswith("+00:00")  # the ms, readable too
    served = json.loads(cli(*get).stdout)["signals"]["interests"]
    assert served["version"] == 2
    # The same profile as v2 in the diff.
    assert [entry["key"] for entry in served["value"]] == [
        entry["key"] for entry in report["examples"][0]["new"]
    ]
    # A cut back within the grace period warns of nothing: v1 was served until just now.
    back = cli("signals", "cutover", "interests@1", "--grace", "1h", *common[:-1])
    assert "never backfilled" not in back.stderr
    assert " ".join(back.stdout.split()).startswith(
        "interests@1 is served by default now, in place of interests@2, which is computed "
        "and answered when named until "
    )


def test_a_version_backfilled_before_apply_is_not_planned_for_another_backfill(
    tmp_path: Path, history: History
) -> None:
    """The README's order: plan, backfill the new version, then apply. Once ``apply`` was in
    use, the backfilled state used to read "never applied: partial history; backfill it"
    (needs backfill: yes) in plan and apply, whatever the author backfilled."""
    v1 = module(tmp_path, "v1", V1)
    shadowed = module(tmp_path, "shadowed", SHADOWED)
    store = streamed(tmp_path / "store", history, v1)
    cli("signals", "apply", "--signals", v1, "--store", str(store))
    assert plan(store, shadowed)["interests@2"]["needs_backfill"] is True

    settings = settings_for(store)
    settings.signals = shadowed
    archive = write_jsonl_archive(tmp_path / "archive", history)
    backfill(BackfillJob(str(archive), settings, only=("interests@2",)))
    backfilled = plan(store, shadowed)["interests@2"]
    assert (backfilled["kind"], backfilled["needs_backfill"]) == ("new", False)
    assert "backfilled" in backfilled["detail"]
    # Backfilled under another definition (edited since, without a new version): no history.
    edited = module(tmp_path, "edited", SHADOWED.replace('"3d", True', '"2d", True'))
    assert plan(store, edited)["interests@2"]["needs_backfill"] is True
    cli("signals", "apply", "--signals", shadowed, "--store", str(store))
    assert {c["kind"] for c in plan(store, shadowed).values()} == {"unchanged"}


def test_a_plan_printed_to_a_pipe_is_not_cut_short(tmp_path: Path, history: History) -> None:
    """Found in a newcomer's trial: piped or redirected (a CI log, a review tool), the plan's
    table was cut to 80 columns ("recent_engagement…"); a table is as wide as its content."""
    v1 = module(tmp_path, "v1", V1)
    store = streamed(tmp_path / "store", history, v1)
    cli("signals", "apply", "--signals", v1, "--store", str(store))
    edited = module(tmp_path, "edited", 'SIGNALS = [interests(1, "5d")]\n')
    env = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    done = subprocess.run(
        [str(BIN), "signals", "plan", "--signals", edited, "--store", str(store)],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "…" not in done.stdout
    rows = {line.split("│")[1].strip(): line for line in done.stdout.splitlines() if "@1" in line}
    assert "definition changed under the same version: bump the version" in rows["interests@1"]
    assert "no longer declared: its state is dropped as users' events arrive" in rows["clicks@1"]
