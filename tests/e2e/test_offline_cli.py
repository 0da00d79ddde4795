"""The README's offline workflow, run as a user runs it: archive → backfill; labels → training
set. The commands are taken from the README; only the event count is made smaller."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

README = Path(__file__).resolve().parents[2] / "README.md"
BIN = Path(sys.executable).parent
UNTIL_MS = 1_768_348_800_000  # 2026-01-14T00:00:00Z, the README's --until


def readme_commands() -> list[list[str]]:
    section = README.read_text().split("## Offline: backfill", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    assert block is not None
    commands = [shlex.split(line) for line in block.group(1).splitlines() if line.strip()]
    for command in commands:
        command[0] = str(BIN / Path(command[0]).name)
        if "--events" in command and command[1] == "generate":
            command[command.index("--events") + 1] = "4000"
    return commands


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "400"}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def test_readme_offline_workflow_runs(tmp_path: Path) -> None:
    commands = readme_commands()
    names = [c[1] if Path(c[0]).name == "usersignals" else c[0] for c in commands]
    assert names == [
        "generate", "tables", "backfill", "get", str(BIN / "python"), "training-set"
    ]  # fmt: skip
    run(commands[0], tmp_path)
    run(commands[1], tmp_path)
    backfilled = run(commands[2], tmp_path)
    events = [
        msgspec.json.decode(line)
        for line in (tmp_path / "data/history/events.jsonl").read_bytes().splitlines()
    ]
    taken = sum(1 for event in events if event["ts"] <= UNTIL_MS)
    assert f"backfilled {taken:,} events" in backfilled.stderr
    user = max({e["user_id"] for e in events}, key=[e["user_id"] for e in events].count)
    commands[3][2] = user
    served = json.loads(run(commands[3], tmp_path).stdout)
    counts = served["signals"]["action_counts"]
    mine = [e for e in events if e["user_id"] == user]
    week = [e for e in mine if UNTIL_MS - 7 * 86_400_000 < e["ts"] <= UNTIL_MS]
    # Nothing after --until was taken; the 7-day window holds the week (give or take the
    # oldest tile at the window's edge).
    assert counts["newest_event_ms"] == max(e["ts"] for e in mine if e["ts"] <= UNTIL_MS)
    assert len(week) * 0.8 <= counts["value"]["total"] <= len(week) + 0.2 * len(week) + 1

    run(commands[4], tmp_path)  # the README's labels, as a reader writes them first
    readme_labels = pq.read_table(tmp_path / "data/labels.parquet")
    assert readme_labels.column_names == ["user_id", "ts", "clicked"]
    assert set(readme_labels.column("ts").to_pylist()) == {UNTIL_MS}
    # Then labels of this smaller workload's busiest user, in their place.
    labels = [(user, UNTIL_MS, 1), ("nobody", UNTIL_MS, 0), (user, UNTIL_MS - 86_400_000, 0)]
    pq.write_table(
        pa.table(
            {
                "user_id": [u for u, _, _ in labels],
                "ts": pa.array([t for _, t, _ in labels], pa.timestamp("ms", tz="UTC")),
                "clicked": [c for _, _, c in labels],
            }
        ),
        tmp_path / "data/labels.parquet",
    )
    run(commands[5], tmp_path)
    features = pq.read_table(tmp_path / "data/features.parquet")
    assert features.column_names[:3] == ["user_id", "ts", "clicked"]
    assert "action_counts" in features.column_names
    rows = features.to_pylist()
    assert [row["clicked"] for row in rows] == [1, 0, 0]
    assert json.loads(rows[1]["recent_engagements"]) == []
    assert json.loads(rows[0]["recent_engagements"])  # the user engaged before the label time


def test_bad_options_exit_2_with_one_line_naming_the_problem(tmp_path: Path) -> None:
    archive = tmp_path / "archive"  # beside the store: a dead-letter file inside is refused
    archive.mkdir()
    (archive / "events.jsonl").write_text("")
    pq.write_table(pa.table({"user": ["u1"], "ts": [1]}), tmp_path / "labels.parquet")
    cli = str(BIN / "usersignals")
    reference = ["--signals", "usersignals.examples.reference", "--store", str(tmp_path / "s")]
    cases = [
        ([cli, "backfill", "--events", str(archive), "--until", "soon", *reference], "until:"),
        ([cli, "backfill", "--events", str(archive), "--only", "nope@1", *reference], "nope"),
        (
            [cli, "backfill", "--events", str(archive), "--only", "action_counts@9", *reference],
            "defines action_counts@1, not version 9",
        ),
        (
            [cli, "training-set", "--labels", str(tmp_path / "labels.parquet"), "--events",
             str(archive), "--out", str(tmp_path / "f.parquet"), *reference],
            "no column 'user_id'",
        ),
        (
            [cli, "training-set", "--labels", str(tmp_path / "labels.parquet"), "--events",
             str(archive), "--out", str(tmp_path / "f.parquet"), "--user-column", "user",
             "--context", "window=soon", *reference],
            "window:",
        ),
    ]  # fmt: skip
    pq.write_table(
        pa.table({"user_id": ["u1"], "ts": [UNTIL_MS], "action_counts": [1]}),
        tmp_path / "clash.parquet",
    )
    pq.write_table(pa.table({"user_id": ["u1"], "ts": [UNTIL_MS // 1000]}), tmp_path / "s.parquet")
    pq.write_table(pa.table({"user_id": ["u1"], "ts": [UNTIL_MS]}), tmp_path / "ok.parquet")
    training = [cli, "training-set", "--events", str(archive), *reference]
    out = ["--out", str(tmp_path / "f.parquet")]
    cases += [
        (
            [cli, "backfill", "--events", str(tmp_path / "nothing"), *reference],
            "does not exist",
        ),
        (
            [*training, "--labels", str(tmp_path / "none.parquet"), *out],
            "does not exist",
        ),
        (
            [*training, "--labels", str(tmp_path / "s.parquet"), "--out",
             str(tmp_path / "s.parquet")],
            "is the labels file",
        ),
        (
            [*training, "--labels", str(tmp_path / "clash.parquet"), *out],
            "column 'action_counts'",
        ),
        (  # found in a newcomer's trial: refused only once the work was done, in errno's words
            [*training, "--labels", str(tmp_path / "ok.parquet"), "--out", str(tmp_path)],
            "is a directory: give the file to write",
        ),
        (
            [*training, "--labels", str(tmp_path / "ok.parquet"), *out, "--context",
             "window=7d", "--context", "window=7d"],
            "twice",
        ),
        ([*training, "--labels", str(tmp_path / "ok.parquet"), *out, "--workers", "0"], "workers"),
        (
            [*training, "--labels", str(tmp_path / "ok.parquet"), *out, "--context",
             "window=7d,window=1d"],
            "window: given twice",
        ),
        (
            [*training, "--labels", str(tmp_path / "ok.parquet"), *out, "--context", "window="],
            "window: no value",
        ),
        (
            [*training, "--labels", str(tmp_path / "s.parquet"), *out],
            "before 2000-01-01",
        ),
        (
            [cli, "backfill", "--events", str(archive), "--until", str(UNTIL_MS // 1000),
             *reference],
            "before 2000-01-01",
        ),
        ([cli, "backfill", "--events", str(archive), "--workers", "-1", *reference], "workers"),
        (  # found in an ML engineer's trial: the labels file got the dead letters appended
            [*training, "--labels", str(tmp_path / "ok.parquet"), *out, "--dead-letter",
             str(tmp_path / "ok.parquet")],
            "is the labels file",
        ),
        (  # ...and one inside the archive is read as events by the next job
            [*training, "--labels", str(tmp_path / "ok.parquet"), *out, "--dead-letter",
             str(archive / "dead.jsonl")],
            "inside the event archive",
        ),
        (
            [cli, "backfill", "--events", str(archive), "--dead-letter",
             str(archive / "dead.jsonl"), *reference],
            "inside the event archive",
        ),
        (  # found in a newcomer's trial: after Spark's JVM had started, with its log lines
            [*training, "--labels", str(tmp_path / "labels.parquet"), *out, "--spark",
             "local[1]"],
            "no column 'user_id'",
        ),
    ]  # fmt: skip
    # Without pyarrow (an optional dependency): the install that brings it, not a traceback.
    no_pyarrow = [
        sys.executable,
        "-c",
        "import sys; sys.modules['pyarrow'] = None; "
        "from usersignals.cli import main; sys.argv[0] = 'usersignals'; main()",
    ]
    cases.append(
        ([*no_pyarrow, *training[1:], "--labels", str(tmp_path / "ok.parquet"), *out],
         "pip install 'usersignals[parquet]'")
    )  # fmt: skip
    # Each case a process of its own, as a user runs it, three at a time: one after the other
    # they were 30 s of waiting on interpreter and JVM start-ups, one of the suite's slowest
    # tests. So that no case can be refused for another's lock on the store, or see a store
    # another made, each names a store of its own.
    shared_store = reference[-1]
    commands = [
        [f"{part}-{n}" if part == shared_store else part for part in command]
        for n, (command, _) in enumerate(cases)
    ]
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda command: run_refused(command, tmp_path), commands))
    for command, (_, message), done in zip(commands, cases, results, strict=True):
        assert done.returncode == 2, (command, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("error: ")
        assert message in lines[0]


def run_refused(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``command`` run to its end, whatever its exit status."""
    return subprocess.run(
        command, cwd=cwd, env={**os.environ, "COLUMNS": "400"}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def test_an_archive_with_no_valid_event_is_said_so(tmp_path: Path) -> None:
    """Every record bad (times as floats, say): the job still ends as a job does, but it
    says that nothing was taken and where the reasons are."""
    (tmp_path / "events.jsonl").write_text('{"event_id": "e1", "ts": 1.5}\n{"nope": 1}\n')
    (tmp_path / "counts.py").write_text(
        "from usersignals import Count, Signal\n"
        'SIGNALS = [Signal(name="n", version=1, aggregate=Count(by="action"), retention="7d")]\n'
    )
    done = subprocess.run(
        [str(BIN / "usersignals"), "backfill", "--events", str(tmp_path / "events.jsonl"),
         "--signals", str(tmp_path / "counts.py"), "--store", str(tmp_path / "s"),
         "--workers", "1"],
        cwd=tmp_path, env={**os.environ, "COLUMNS": "400"}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stderr.split())
    assert "warning: no record of the archive was a valid event (2 bad" in said
    assert "dead-letter.jsonl" in said


def test_a_training_set_run_again_replaces_its_dead_letters(tmp_path: Path) -> None:
    """Found in an ML engineer's trial: each run of the same training set appended its bad
    records to `OUT.dead-letter.jsonl` (5 lines after three runs of an archive with 2 bad
    records, while the summary said 2). The default file is the output's: replaced."""
    archive = tmp_path / "archive"
    archive.mkdir()
    event = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "action": "click",
             "surface": "home", "ts": 1_767_225_600_000}  # fmt: skip
    (archive / "events.jsonl").write_text(json.dumps(event) + '\n{"nope": 1}\n')
    pq.write_table(pa.table({"user_id": ["u1"], "ts": [event["ts"]]}), tmp_path / "labels.parquet")
    (tmp_path / "counts.py").write_text(
        "from usersignals import Count, Signal\n"
        'SIGNALS = [Signal(name="n", version=1, aggregate=Count(by="action"), retention="7d")]\n'
    )
    labels = str(tmp_path / "labels.parquet")
    command = [str(BIN / "usersignals"), "training-set", "--labels", labels,
               "--events", str(archive), "--signals", str(tmp_path / "counts.py"),
               "--store", str(tmp_path / "s"), "--out", str(tmp_path / "f.parquet")]  # fmt: skip
    for _ in range(2):
        done = run(command, tmp_path)
        assert done.returncode == 0, done.stderr
    assert len((tmp_path / "f.dead-letter.jsonl").read_text().splitlines()) == 1
    # A run refused keeps the pair the last one wrote (a review's find: deleted up front).
    said = refused([*command, "--context", "window=soon"], tmp_path)
    assert "window" in said
    assert len((tmp_path / "f.dead-letter.jsonl").read_text().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir() if "dead-letter" in p.name) == [
        "f.dead-letter.jsonl"
    ]


def test_the_backfill_says_how_many_repeated_event_ids_it_dropped(tmp_path: Path) -> None:
    """Found in a newcomer's trial: `replay` of an archive says "31 repeated event ids
    dropped"; the backfill of the same archive said "backfilled 3,031 events" and nothing
    of the 31 it did not apply, so the two summaries could not be squared."""
    event = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "action": "click",
             "surface": "home", "ts": 1_767_225_600_000}  # fmt: skip
    other = {**event, "event_id": "e2", "ts": event["ts"] + 1}
    lines = [json.dumps(e) for e in (event, other, event)]  # e1 redelivered
    (tmp_path / "events.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "counts.py").write_text(
        "from usersignals import Count, Signal\n"
        'SIGNALS = [Signal(name="n", version=1, aggregate=Count(by="action"), retention="7d")]\n'
    )
    done = run(
        [str(BIN / "usersignals"), "backfill", "--events", str(tmp_path / "events.jsonl"),
         "--signals", str(tmp_path / "counts.py"), "--store", str(tmp_path / "s"),
         "--workers", "1"],
        tmp_path,
    )  # fmt: skip
    said = " ".join(done.stderr.split())
    assert "backfilled 3 events into 1 users (n@1) in" in said  # which version: said
    assert "1 repeated event ids dropped" in said


def two_definitions_of_one_version(tmp_path: Path) -> tuple[Path, Path]:
    """One event, and two modules defining `interest@1` with two half-lives."""
    event = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "action": "click",
             "surface": "home", "ts": 1_767_225_600_000}  # fmt: skip
    (tmp_path / "events.jsonl").write_text(json.dumps(event) + "\n")
    for name, half_life in (("a.py", "3d"), ("b.py", "2d")):
        (tmp_path / name).write_text(
            "from usersignals import DecayedScores, Signal\n"
            'SIGNALS = [Signal(name="interest", version=1, retention="7d", aggregate='
            f'DecayedScores(key="surface", half_life="{half_life}"))]\n'
        )
    return tmp_path / "a.py", tmp_path / "b.py"


def refused(command: list[str], cwd: Path) -> str:
    """A command expected to be refused (exit 2): what it said, on one line."""
    done = subprocess.run(
        command, cwd=cwd, env={**os.environ, "COLUMNS": "400"}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    return " ".join(done.stderr.split())


def test_a_backfill_of_a_definition_changed_under_its_version_is_refused(tmp_path: Path) -> None:
    """Found in an ML engineer's trial: `signals apply` and `run` refuse a module whose
    signal changed under the same name@version, but `backfill` merged its states in (rc 0),
    and the store then served them under the recorded definition (a score of 55.69 where
    the recorded half-life gives 52.71)."""
    first, edited = two_definitions_of_one_version(tmp_path)
    cli, store = str(BIN / "usersignals"), ["--store", str(tmp_path / "s")]
    events = ["--events", str(tmp_path / "events.jsonl"), "--workers", "1"]
    run([cli, "backfill", *events, "--signals", str(first), *store], tmp_path)
    run([cli, "signals", "apply", "--signals", str(first), *store], tmp_path)
    said = refused([cli, "backfill", *events, "--signals", str(edited), *store], tmp_path)
    assert "interest@1 defined otherwise" in said
    assert "bump the version" in said


def test_a_processor_refuses_a_definition_changed_since_apply(tmp_path: Path) -> None:
    """Found in a newcomer's trial: after `signals apply` recorded a definition, the same
    name@version defined otherwise was refused by `plan` and `apply`, yet `run` and
    `replay` started and applied events (the processor compared the module only with the
    one the last processor recorded): the store mixed two definitions."""
    first, edited = two_definitions_of_one_version(tmp_path)
    cli, store = str(BIN / "usersignals"), ["--store", str(tmp_path / "s")]
    run([cli, "signals", "apply", "--signals", str(first), *store], tmp_path)
    replay = [cli, "replay", str(tmp_path / "events.jsonl"), "--signals", str(edited)]
    said = refused([*replay, *store], tmp_path)
    assert "interest@1" in said
    assert "bump its version" in said
