"""The ``usersignals`` command as a user runs it: real processes, real files, a real store.

One seeded workload (5,000 events ending 2026-01-01T00:00Z) is generated, its item table loaded
and the events replayed with bad lines mixed in; the tests then read the store back with
``usersignals get --as-of`` so that windows do not depend on the wall clock.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

CLI = Path(sys.executable).parent / "usersignals"
END_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
EVENTS = 5_000
REFERENCE_ACTIONS = ["impression", "closeup", "click", "save", "share", "hide"]
REFERENCE_SIGNALS = [
    "recent_engagements",
    "action_counts",
    "category_interest",
    "taste_embedding",
    "distinct_creators",
]
ENGAGEMENTS = {"closeup", "click", "save", "share", "hide"}
RESULT_KEYS = {"name", "version", "kind", "value", "newest_event_ms", "newest_event_time", "age_ms"}


def run(
    *args: str | Path, cwd: Path, columns: int | None = 400, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed command. ``columns=None`` leaves the width to rich (80 in a pipe)."""
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("USERSIGNALS_")
        and name not in ("COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")
    }
    environ["NO_COLOR"] = "1"
    if columns is not None:
        environ["COLUMNS"] = str(columns)
    environ.update(env or {})
    return subprocess.run(
        [str(CLI), *map(str, args)],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result


def strip_age(document: Any) -> Any:
    """The JSON minus ``age_ms``, which depends on the wall clock at read time."""
    if isinstance(document, dict):
        return {key: strip_age(value) for key, value in document.items() if key != "age_ms"}
    if isinstance(document, list):
        return [strip_age(value) for value in document]
    return document


# -- the shared workload ----------------------------------------------------------------------


@dataclass
class Workload:
    root: Path
    events_path: Path
    items_path: Path
    generate: subprocess.CompletedProcess[str]
    events: list[dict[str, Any]]


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> Workload:
    root = tmp_path_factory.mktemp("cli")
    out = root / "workload"
    result = ok(run("generate", "--events", EVENTS, "--out", out, "--end", END_MS, cwd=root))
    events_path = out / "events.jsonl"
    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    return Workload(root, events_path, out / "items.jsonl", result, events)


def good_event(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "bad",
        "user_id": "u-bad",
        "item_id": "i-bad",
        "action": "save",
        "surface": "home",
        "ts": END_MS - 1_000,
    }
    event.update(changes)
    return event


def without_ts() -> str:
    event = good_event()
    del event["ts"]
    return json.dumps(event)


# (line text, reason or None for a blank line), inserted before the given good line index.
BAD_LINES: list[tuple[int, str, str | None]] = [
    (0, '{"event_id": "bad-1", "user_id": "u1"', "malformed_json"),
    (3, "this is not json", "malformed_json"),
    (10, without_ts(), "missing_field"),
    (500, json.dumps(good_event(ts="yesterday")), "wrong_type"),
    (501, json.dumps(good_event(user_id=12345)), "wrong_type"),
    (1000, "", None),
    (1500, json.dumps(good_event(ts=4_102_444_800_000)), "time_out_of_range"),  # 2100
    (2000, json.dumps(good_event(ts=1_000)), "time_out_of_range"),
    (2500, json.dumps(good_event(attrs={"blob": "x" * 9_000})), "oversized"),
    (3000, json.dumps(good_event(user_id="")), "invalid_value"),
    (3001, "   ", None),
    (4000, json.dumps(good_event(action="like")), "unknown_action"),
    (EVENTS, json.dumps(good_event(event_id="")), "invalid_value"),  # after the last good
]


@dataclass
class Replayed:
    workload: Workload
    store: Path
    mixed: Path
    bad: list[tuple[int, str, str]]  # (line number, reason, line text)
    good_lines: int
    load: subprocess.CompletedProcess[str]
    first: subprocess.CompletedProcess[str]
    second: subprocess.CompletedProcess[str]
    dead_letters_after_first: list[dict[str, Any]]
    users: list[str]
    before: dict[str, Any]
    after: dict[str, Any]


def read_all(user: str, store: Path, cwd: Path) -> Any:
    result = ok(run("get", user, "--store", store, "--as-of", END_MS, cwd=cwd))
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def replayed(workload: Workload) -> Replayed:
    root = workload.root
    store = root / "store"
    load = ok(run("tables", "load", "items", workload.items_path, "--store", store, cwd=root))

    good = workload.events_path.read_text().splitlines()
    inserts: dict[int, list[tuple[str, str | None]]] = {}
    for before, text, reason in BAD_LINES:
        inserts.setdefault(before, []).append((text, reason))
    lines: list[str] = []
    bad: list[tuple[int, str, str]] = []
    for index in range(len(good) + 1):
        for text, reason in inserts.get(index, []):
            lines.append(text)
            if reason is not None:
                bad.append((len(lines), reason, text))
        if index < len(good):
            lines.append(good[index])
    mixed = root / "mixed.jsonl"
    mixed.write_text("\n".join(lines) + "\n")

    config = root / "usersignals.toml"
    config.write_text(f"[events]\nallowed_actions = {json.dumps(REFERENCE_ACTIONS)}\n")

    # The busiest users, and the users of the good lines right after two bad ones.
    counts = Counter(event["user_id"] for event in workload.events)
    users = [user for user, _ in counts.most_common(3)]
    users += [workload.events[500]["user_id"], workload.events[2500]["user_id"]]

    first = ok(run("replay", mixed, "--store", store, "--config", config, "--json", cwd=root))
    dead_letter_path = store / "dead-letter.jsonl"
    dead_letters = [json.loads(line) for line in dead_letter_path.read_text().splitlines()]
    before = {user: read_all(user, store, root) for user in users}
    second = ok(run("replay", mixed, "--store", store, "--config", config, "--json", cwd=root))
    after = {user: read_all(user, store, root) for user in users}
    return Replayed(
        workload,
        store,
        mixed,
        bad,
        len(good),
        load,
        first,
        second,
        dead_letters,
        users,
        before,
        after,
    )


def summary(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The ``replay --json`` summary."""
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def summary_numbers(result: subprocess.CompletedProcess[str]) -> tuple[int, ...]:
    document = summary(result)
    names = ("lines", "events", "duplicates", "user_writes", "bad")
    return tuple(int(document[name]) for name in names)


# -- generate and tables load -----------------------------------------------------------------


def test_generate_writes_events_and_items(workload: Workload) -> None:
    assert len(workload.events) == EVENTS
    items = [json.loads(line) for line in workload.items_path.read_text().splitlines()]
    assert items
    assert f"wrote {EVENTS:,} events to" in workload.generate.stderr
    assert f"{len(items):,} items to" in workload.generate.stderr
    timestamps = [event["ts"] for event in workload.events]
    # Event time ends at --end (give or take the generator's few seconds of jitter).
    assert min(timestamps) > END_MS - 15 * DAY_MS
    assert END_MS - HOUR_MS < max(timestamps) <= END_MS + 10_000
    assert {event["action"] for event in workload.events} <= set(REFERENCE_ACTIONS)
    # Every item an event names is in the item table, with the fields the signals enrich from.
    item_ids = {item["item_id"] for item in items}
    assert {event["item_id"] for event in workload.events} <= item_ids
    assert {"category", "creator_id", "embedding"} <= set(items[0])
    assert len(items[0]["embedding"]) == 32


def test_generate_is_deterministic(workload: Workload, tmp_path: Path) -> None:
    ok(run("generate", "--events", EVENTS, "--out", tmp_path, "--end", END_MS, cwd=tmp_path))
    assert (tmp_path / "events.jsonl").read_bytes() == workload.events_path.read_bytes()
    assert (tmp_path / "items.jsonl").read_bytes() == workload.items_path.read_bytes()


def test_generate_takes_its_end_as_iso_8601_too(workload: Workload, tmp_path: Path) -> None:
    """As every other time option: ``--end`` in ISO 8601 with a zone is the same time in ms;
    a time it cannot read exits 2 naming the option."""
    end = datetime.fromtimestamp(int(END_MS) / 1000, tz=UTC).isoformat(timespec="milliseconds")
    ok(run("generate", "--events", EVENTS, "--out", tmp_path, "--end", end, cwd=tmp_path))
    assert (tmp_path / "events.jsonl").read_bytes() == workload.events_path.read_bytes()
    done = run("generate", "--events", EVENTS, "--out", tmp_path, "--end", "tomorrow", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: end: 'tomorrow' is not a time; use milliseconds since the epoch or ISO 8601 "
        "with a zone, e.g. 2026-11-25T10:00:00Z"
    ]
    # A time in seconds (found by the review: it wrote events of 1970) is refused as
    # every other time option refuses it.
    seconds = str(int(END_MS) // 1000)
    done = run("generate", "--events", EVENTS, "--out", tmp_path, "--end", seconds, cwd=tmp_path)
    assert done.returncode == 2
    assert "end: must not be before 2000-01-01" in done.stderr


def test_tables_load_reports_every_item(replayed: Replayed) -> None:
    items = replayed.workload.items_path.read_text().splitlines()
    assert f"loaded {len(items):,} records into table 'items'" in replayed.load.stderr


# -- replay with bad lines --------------------------------------------------------------------


def test_replay_counts_good_and_bad_lines(replayed: Replayed) -> None:
    lines, good, duplicates, user_writes, bad = summary_numbers(replayed.first)
    assert lines == replayed.good_lines + len(BAD_LINES)
    assert good == replayed.good_lines == EVENTS
    assert duplicates == 0
    assert bad == len(replayed.bad) == 11
    # One micro-batch: one write per distinct user of the good events.
    assert user_writes == len({event["user_id"] for event in replayed.workload.events})
    # Every event has its item in the table.
    assert summary(replayed.first)["missing_enrichment"] == {}


def test_replay_names_every_bad_line_and_its_reason(replayed: Replayed) -> None:
    document = summary(replayed.first)
    assert document["bad_by_reason"] == dict(Counter(reason for _, reason, _ in replayed.bad))
    assert [(bad["partition"], bad["offset"], bad["reason"]) for bad in document["bad_events"]] == [
        ("file:mixed.jsonl", number, reason) for number, reason, _ in replayed.bad
    ]
    assert all(bad["detail"] for bad in document["bad_events"])
    assert document["dead_letter"] == str(replayed.store / "dead-letter.jsonl")


def test_replay_prints_a_summary_for_people(replayed: Replayed, tmp_path: Path) -> None:
    """Without --json, the same replay prints its summary and a table of bad lines."""
    root = replayed.workload.root
    result = ok(run("replay", replayed.mixed, "--store", tmp_path / "store", cwd=root))
    assert result.stdout == ""  # the summary goes to the terminal, not to a pipe of JSON
    assert result.stderr.strip()


def test_dead_letter_file_holds_exactly_the_bad_lines(replayed: Replayed) -> None:
    records = replayed.dead_letters_after_first
    assert [(r["offset"], r["reason"]) for r in records] == [
        (number, reason) for number, reason, _ in replayed.bad
    ]
    assert [r["raw"] for r in records] == [text for _, _, text in replayed.bad]
    assert {r["partition"] for r in records} == {"file:mixed.jsonl"}
    assert all(r["detail"] for r in records)
    by_reason = {r["reason"]: r["detail"] for r in records}
    assert "`ts`" in by_reason["missing_field"]
    assert "'like'" in by_reason["unknown_action"]
    assert "bytes > limit 8192" in by_reason["oversized"]


def test_good_events_around_bad_lines_are_applied(replayed: Replayed) -> None:
    events = replayed.workload.events
    for user in replayed.users:
        mine = [e for e in events if e["user_id"] == user and e["ts"] <= END_MS]
        signals = replayed.before[user]["signals"]
        counts = signals["action_counts"]["value"]
        # All events are within 14 days of the end, so a 28-day read counts every one of them.
        assert counts["total"] == len(mine), user
        assert counts["by"] == dict(Counter(event["action"] for event in mine)), user
        engaged = sorted(
            (event for event in mine if event["action"] in ENGAGEMENTS),
            key=lambda event: event["ts"],
            reverse=True,
        )
        recent = signals["recent_engagements"]["value"]
        assert [entry["item_id"] for entry in recent] == [e["item_id"] for e in engaged[:500]]
        newest = max(event["ts"] for event in mine)
        assert signals["action_counts"]["newest_event_ms"] == newest


def test_replaying_again_changes_nothing(replayed: Replayed) -> None:
    lines, good, duplicates, user_writes, bad = summary_numbers(replayed.second)
    assert (good, duplicates, user_writes) == (EVENTS, EVENTS, 0)
    assert lines == replayed.good_lines + len(BAD_LINES)
    assert bad == len(replayed.bad)
    for user in replayed.users:
        assert strip_age(replayed.after[user]) == strip_age(replayed.before[user]), user


def test_a_replay_stopped_with_ctrl_c_says_how_to_go_on(tmp_path: Path) -> None:
    """Found in a newcomer's trial: Ctrl-C during `replay` exited 130 without a word, and
    whether the store was left half-written was anybody's guess."""
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"event_id":"e1","user_id":"u1","item_id":"i1","action":"save","surface":"home",'
        '"ts":1767225600000}\n'
    )
    stopped_midway = (
        "import sys\n"
        "import usersignals.cli as cli\n"
        "def interrupted(*args, **kwargs):\n"
        "    raise KeyboardInterrupt\n"
        "cli.replay_file = interrupted\n"
        f"sys.argv = ['usersignals', 'replay', {str(events)!r}, '--store', 's']\n"
        "cli.main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", stopped_midway],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 130, done.stderr
    said = " ".join(done.stderr.split())
    assert "Traceback" not in said
    assert (
        "interrupted: every batch written before the stop is applied; replay the file again "
        "to go on (its applied events are skipped)"
    ) in said


# -- get --------------------------------------------------------------------------------------


def get(replayed: Replayed, *args: str | int) -> subprocess.CompletedProcess[str]:
    return run("get", *map(str, args), "--store", replayed.store, cwd=replayed.workload.root)


def test_get_takes_names_separated_by_commas_as_the_api_does(replayed: Replayed) -> None:
    """Found in a newcomer's trial: `--signal action_counts,category_interest` was "unknown
    signal 'action_counts,category_interest'", where the API's `names=` takes commas."""
    user = replayed.workload.events[-1]["user_id"]
    both = ok(get(replayed, user, "--signal", "action_counts,category_interest"))
    assert list(json.loads(both.stdout)["signals"]) == ["action_counts", "category_interest"]


def naive_counts(events: list[dict[str, Any]], user: str, start: int, end: int) -> Counter[str]:
    return Counter(
        event["action"]
        for event in events
        if event["user_id"] == user and start <= event["ts"] <= end
    )


def test_get_prints_the_signal_as_json(replayed: Replayed) -> None:
    user = replayed.workload.events[-1]["user_id"]  # active in the last hour
    result = ok(
        get(replayed, user, "--signal", "action_counts", "--window", "1h", "--as-of", END_MS)
    )
    document = json.loads(result.stdout)
    assert set(document) == {"user_id", "signals"}
    assert document["user_id"] == user
    assert list(document["signals"]) == ["action_counts"]
    counts = document["signals"]["action_counts"]
    assert set(counts) == RESULT_KEYS
    assert (counts["name"], counts["version"], counts["kind"]) == ("action_counts", 1, "count")
    assert set(counts["value"]) == {"total", "by"}
    # Windows are answered from time tiles: the tile straddling the window's start is left
    # out (see aggregations/tiles.py), so a window counts at most what the raw events hold.
    expected = naive_counts(replayed.workload.events, user, END_MS - HOUR_MS + 1, END_MS)
    value = counts["value"]
    assert 0 < value["total"] == sum(value["by"].values()) <= sum(expected.values())
    assert all(value["by"][action] <= expected[action] for action in value["by"])
    mine = [event["ts"] for event in replayed.workload.events if event["user_id"] == user]
    assert counts["newest_event_ms"] == max(mine) <= END_MS
    assert counts["newest_event_time"].startswith("2025-12-31T23:")
    assert counts["newest_event_time"].endswith("+00:00")
    assert counts["age_ms"] >= 0


@pytest.mark.parametrize("days_back", [1, 7, 14])
def test_get_counts_exactly_from_a_tile_aligned_since(replayed: Replayed, days_back: int) -> None:
    # A range that starts on a day boundary starts on a boundary of every tile, so the
    # tiles answer it exactly.
    since = END_MS - days_back * DAY_MS
    # (The seeded workload has no event after its end, which would sit in the end's tile.)
    assert max(event["ts"] for event in replayed.workload.events) <= END_MS
    for user in replayed.users[:3]:
        result = ok(get(replayed, user, "-s", "action_counts", "--since", since, "--as-of", END_MS))
        value = json.loads(result.stdout)["signals"]["action_counts"]["value"]
        expected = naive_counts(replayed.workload.events, user, since, END_MS)
        assert value == {"total": sum(expected.values()), "by": dict(sorted(expected.items()))}


def test_get_applies_filters_and_reports_ignored_parameters(replayed: Replayed) -> None:
    user = replayed.users[0]
    since = END_MS - 7 * DAY_MS
    result = ok(
        get(
            replayed,
            user,
            "-s",
            "action_counts",
            "-s",
            "recent_engagements",
            "--actions",
            "save,click",
            "--since",
            since,
            "--limit",
            "3",
            "--as-of",
            END_MS,
        )
    )
    signals = json.loads(result.stdout)["signals"]
    assert list(signals) == ["action_counts", "recent_engagements"]
    expected = naive_counts(replayed.workload.events, user, since, END_MS)
    counts = signals["action_counts"]
    assert counts["value"]["by"] == {a: n for a, n in expected.items() if a in ("save", "click")}
    assert counts["ignored"] == ["limit"]
    newest = sorted(
        (
            event
            for event in replayed.workload.events
            if event["user_id"] == user
            and event["action"] in ("save", "click")
            and since <= event["ts"] <= END_MS
        ),
        key=lambda event: event["ts"],
        reverse=True,
    )[:3]
    recent = signals["recent_engagements"]
    assert len(newest) == 3
    assert [(e["ts"], e["item_id"], e["action"]) for e in recent["value"]] == [
        (e["ts"], e["item_id"], e["action"]) for e in newest
    ]
    assert "ignored" not in recent


def test_get_unknown_user_has_empty_signals(replayed: Replayed) -> None:
    result = ok(get(replayed, "u-nobody", "--as-of", END_MS))
    signals = json.loads(result.stdout)["signals"]
    assert list(signals) == REFERENCE_SIGNALS
    for value in signals.values():
        assert value["newest_event_ms"] is None
        assert value["age_ms"] is None


@pytest.mark.parametrize(
    ("option", "value", "parameter"),
    [
        ("--window", "abc", "window"),
        ("--window", "0s", "window"),
        ("--limit", "0", "limit"),
        ("--since", "2026-01-01T00:00:00", "since"),
        ("--as-of", "yesterday", "as_of"),
    ],
)
def test_get_bad_option_is_one_line_naming_it(
    replayed: Replayed, option: str, value: str, parameter: str
) -> None:
    result = get(replayed, "u1", "--signal", "action_counts", option, value)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {parameter}: ")


@pytest.mark.parametrize("user", ["u" * 129, ""])
def test_get_refuses_a_user_id_the_api_refuses(replayed: Replayed, user: str) -> None:
    """As HTTP's 400: an id ingest would refuse (1 to events.max_user_id_chars code points)."""
    result = get(replayed, user, "--signal", "action_counts")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines == ["error: user_id: must be 1 to 128 characters"], result.stderr


def test_get_unknown_signal(replayed: Replayed) -> None:
    result = get(replayed, "u1", "--signal", "nope", "--window", "1h")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "unknown signal 'nope'" in lines[0]
    assert "known signals: " + ", ".join(REFERENCE_SIGNALS) in lines[0]


def test_a_store_held_by_another_process_is_named_so(tmp_path: Path) -> None:
    """A second writer (a processor already running on the store) gets told why, not
    RocksDB's 'While lock file: ... Resource temporarily unavailable'."""
    from usersignals.state.rocks import RocksStore

    holder = RocksStore(tmp_path / "store")  # as a running processor holds it
    try:
        (tmp_path / "items.jsonl").write_text('{"item_id": "i1"}\n')
        result = run(
            "tables", "load", "items", tmp_path / "items.jsonl", "--store", tmp_path / "store",
            cwd=tmp_path,
        )  # fmt: skip
    finally:
        holder.close()
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "another process has this store open for writing" in lines[0]


def test_get_from_a_missing_store(tmp_path: Path) -> None:
    result = run("get", "u1", "--store", tmp_path / "absent", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: no state store at")
    assert "absent" in result.stderr


def test_error_stays_on_one_line_in_a_pipe(replayed: Replayed) -> None:
    result = run(
        "get",
        "u1",
        "--window",
        "abc",
        "--store",
        replayed.store,
        cwd=replayed.workload.root,
        columns=None,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("window", ["[/x]", "[bold]1"])
def test_error_with_brackets_is_printed_verbatim(replayed: Replayed, window: str) -> None:
    result = get(replayed, "u1", "--window", window)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert window in result.stderr


def test_replay_survives_markup_in_a_bad_event(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(good_event(action="[/x]")) + "\n")
    config = tmp_path / "usersignals.toml"
    config.write_text('[events]\nallowed_actions = ["save"]\n')
    result = run("replay", events, "--store", tmp_path / "store", "--config", config, cwd=tmp_path)
    assert result.returncode == 0
    assert "Traceback" not in result.stderr
    assert "'[/x]'" in result.stderr


def test_tables_load_missing_file(tmp_path: Path) -> None:
    result = run(
        "tables",
        "load",
        "items",
        tmp_path / "absent.jsonl",
        "--store",
        tmp_path / "store",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "absent.jsonl" in result.stderr
    assert "does not exist" in result.stderr
    assert not (tmp_path / "store").exists()  # no empty store left where none was
    (tmp_path / "t.csv").write_text("item_id,price\ni1,3\n")
    typo = run(
        "tables", "load", "items", tmp_path / "t.csv", "--type", "price=numbr",
        "--store", tmp_path / "store", cwd=tmp_path,
    )  # fmt: skip
    assert typo.returncode == 2
    assert "unknown kind 'numbr'" in typo.stderr
    assert not (tmp_path / "store").exists()


def test_replay_missing_file(tmp_path: Path) -> None:
    result = run("replay", tmp_path / "absent.jsonl", "--store", tmp_path / "store", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    absent = tmp_path / "absent.jsonl"
    assert result.stderr.strip() == f"error: events file '{absent}' does not exist"


# -- signals compile --------------------------------------------------------------------------


def test_signals_compile_prints_the_five_reference_signals(tmp_path: Path) -> None:
    result = ok(run("signals", "compile", "usersignals.examples.reference", cwd=tmp_path))
    document = json.loads(result.stdout)
    assert [signal["name"] for signal in document["signals"]] == REFERENCE_SIGNALS
    assert [signal["key"] for signal in document["signals"]] == [
        f"{name}@1" for name in REFERENCE_SIGNALS
    ]
    assert result.stdout == json.dumps(document, indent=2, sort_keys=True) + "\n"


def test_signals_compile_is_the_same_in_every_process(tmp_path: Path) -> None:
    # Sets (e.g. of actions) iterate in a per-process order; the compiled JSON must not.
    outputs = {
        ok(
            run(
                "signals",
                "compile",
                "usersignals.examples.reference",
                cwd=tmp_path,
                env={"PYTHONHASHSEED": seed},
            )
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1


def test_signals_compile_to_a_file(tmp_path: Path) -> None:
    target = tmp_path / "compiled.json"
    result = ok(
        run("signals", "compile", "usersignals.examples.reference", "--out", target, cwd=tmp_path)
    )
    assert result.stdout == ""
    assert len(json.loads(target.read_text())["signals"]) == 5


def test_signals_compile_reports_every_problem_of_a_module(tmp_path: Path) -> None:
    module = tmp_path / "mine.py"
    module.write_text(
        "from usersignals import LastN, Signal\n"
        "bad = Signal(name='Bad', version=0, aggregate=LastN(0))\n"
    )
    result = run("signals", "compile", module, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "signal 'Bad' is invalid" in result.stderr
    for fragment in ("name must be", "version must be", "LastN n must be"):
        assert fragment in result.stderr


def test_signals_compile_unknown_module(tmp_path: Path) -> None:
    result = run("signals", "compile", "no_such_package.signals", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "cannot import signals module 'no_such_package.signals'" in result.stderr


# -- demo -------------------------------------------------------------------------------------


def test_demo_replays_then_serves_live_and_its_hints_work(tmp_path: Path) -> None:
    import socket
    import subprocess

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    directory = tmp_path / "demo"
    command = [
        str(Path(sys.executable).parent / "usersignals"),
        "demo", "--events", "20000", "--dir", str(directory),
        "--port", str(port), "--duration", "12", "--rate", "500",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stderr is not None
        lines: list[str] = []
        for line in process.stderr:
            lines.append(line)
            if line.startswith("Stops in 12 s, or Ctrl-C."):  # as --duration says
                break
        output = "".join(lines)
        assert "generated 20,000 events" in output
        assert "20,000 good events" in output
        assert "0 bad" in output
        hints = [h.strip() for h in output.split("Try:", 1)[1].splitlines() if h.strip()]
        first = re.fullmatch(r"curl '(\S+)'", hints[0])
        assert first, hints[0]
        # The first hint works as printed while the demo runs, with live events flowing in.
        response = httpx.get(first.group(1), timeout=5)
        assert response.status_code == 200
        counts = response.json()["signals"]["action_counts"]
        assert set(counts["value"]) == {"total", "by"}
        user = response.json()["user_id"]
        cli_hint = hints[-2]
        assert cli_hint == (
            f".venv/bin/usersignals get {user} --store {directory / 'store'} "
            "--signal action_counts --window 1h"
        )
        rest, stopped = process.communicate(timeout=60)
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "Traceback" not in stopped
    # Every event produced is applied: the stop applies what the spool still holds (a
    # newcomer's trial found 50 left there, lost to the next demo, which starts afresh).
    counts = re.search(
        r"stopped: ([\d,]+) live events produced, ([\d,]+) applied by the processor",
        " ".join(stopped.split()),  # as the console wrapped it
    )
    assert counts, stopped
    assert "still in the spool" not in stopped
    produced, applied = (int(n.replace(",", "")) for n in counts.groups())
    assert produced == applied > 0
    assert f"{user}: the busiest user, everything" in rest
    # The replay's progress says what it counts (bytes of the file, as MB read).
    assert re.search(r"^replay .* [\d.]+/[\d.]+ MB read *$", output, flags=re.MULTILINE), output
    assert re.search(r"^generate .* 20,000/20,000 events *$", output, flags=re.MULTILINE), output
    # The featured user gets live events: the counts printed while serving go up.
    pulses = [
        int(match.group(1).replace(",", ""))
        for match in re.finditer(
            rf"^live: {user} has ([\d,]+) events in the last hour", stopped, flags=re.MULTILINE
        )
    ]
    assert len(pulses) >= 2, stopped
    assert pulses[-1] > pulses[0], stopped


def test_every_help_keeps_its_defaults_and_brackets() -> None:
    """Help texts say ``[default: data/store]`` and the like; read as markup, the bracketed
    part vanished and the help said "The state store directory ." (a new user's report)."""
    commands = [[], ["backfill"], ["training-set"], ["generate"], ["serve"], ["demo"]]
    said = []
    for command in commands:
        done = subprocess.run(
            [str(CLI), *command, "--help"], capture_output=True, text=True,
            env={**os.environ, "COLUMNS": "400"}, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        said.append(" ".join(done.stdout.split()))  # lines wrap where the terminal ends
    assert "[default: data/store]" in said[1]
    assert "[default: data/store]" in said[2]
    assert "[default: now]" in said[3]
    assert "[default: 8080]" in said[4]
    assert "[default: Ctrl-C]" in said[5]


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["backfill", "--bogus"], "--bogus"),
        (["backfill"], "--events"),
        (["get", "u1", "--limit", "many"], "limit"),
        (["tables", "frobnicate"], "frobnicate"),
    ],
)
def test_a_usage_error_is_one_line_naming_the_parameter(
    arguments: list[str], named: str, tmp_path: Path
) -> None:
    """As the README says of bad options: exit 2 and one line (not click's four-line usage
    block, nor a box drawn across the terminal)."""
    done = subprocess.run(
        [str(CLI), *arguments], capture_output=True, text=True, cwd=tmp_path, timeout=60,
        env={**os.environ, "COLUMNS": "400"},
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert named in lines[0]


def test_no_command_shows_the_help() -> None:
    done = subprocess.run([str(CLI)], capture_output=True, text=True, timeout=60)
    said = done.stdout + done.stderr
    assert done.returncode == 2
    assert said.startswith("Usage: usersignals")  # the help itself, not an error line
    assert "backfill" in said


@pytest.mark.parametrize(
    ("option", "value"), [("--events", "0"), ("--duration", "-1"), ("--rate", "-5")]
)
def test_a_demo_option_out_of_range_is_one_line(tmp_path: Path, option: str, value: str) -> None:
    """Found in a newcomer's trial: `demo --events 0` (its help said x>=0) replayed nothing
    and ended in a traceback finding no busiest user; `--duration -1` was taken."""
    command = [str(Path(sys.executable).parent / "usersignals"), "demo", option, value,
               "--dir", str(tmp_path / "demo")]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert option in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "demo").exists()


def test_a_demo_without_live_events_serves_the_replay(tmp_path: Path) -> None:
    """Found in a newcomer's trial: `demo --rate 0` (its help said x>=0) crashed its feed
    thread on a division by zero, printed the traceback and said "while 0 reference
    events/s flow in"."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [str(Path(sys.executable).parent / "usersignals"), "demo", "--events", "2000",
               "--rate", "0", "--duration", "1", "--port", str(port),
               "--dir", str(tmp_path / "demo")]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    said = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 0, said
    assert "Traceback" not in said
    assert "Exception" not in said
    assert f"serving on http://127.0.0.1:{port}" in said
    assert "(no live events)" in said
    assert "stopped: 0 live events produced, 0 applied by the processor" in said


def test_a_demo_on_a_port_another_server_holds_says_so_at_once(tmp_path: Path) -> None:
    """Found in a newcomer's trial: a demo on the port of a server left running printed
    "The API is serving on ..." and then read that other server's answers as its own."""
    import socket
    import subprocess

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        command = [str(Path(sys.executable).parent / "usersignals"), "demo", "--events", "10",
                   "--dir", str(tmp_path / "demo"), "--port", str(port)]  # fmt: skip
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"--port {port}: cannot listen" in done.stderr
    assert not (tmp_path / "demo").exists()  # nothing replayed first
