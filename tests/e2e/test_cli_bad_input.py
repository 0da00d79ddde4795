"""The command line given undecodable events and out-of-range times (issue 9, items 1 and 8)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from test_cli import END_MS, good_event, ok, run


def replayed_store(tmp_path: Path) -> Path:
    """A store holding one good event, replayed by the command line."""
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(good_event()) + "\n")
    store = tmp_path / "store"
    ok(run("replay", events, "--store", store, cwd=tmp_path))
    return store


def assert_one_error_line(result: subprocess.CompletedProcess[str], parameter: str) -> None:
    """Exit 2 and one line naming ``parameter``: no traceback."""
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {parameter}: ")


def test_replay_dead_letters_a_line_that_is_not_utf8_and_applies_the_rest(
    tmp_path: Path,
) -> None:
    good = [json.dumps(good_event(event_id=f"e{n}", ts=END_MS - n)).encode() for n in range(3)]
    bad = json.dumps(good_event(event_id="eX")).encode().replace(b'"eX"', b'"e\xffX"')
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join([good[0], bad, good[1], good[2]]) + b"\n")
    store = tmp_path / "store"
    result = ok(run("replay", events, "--store", store, cwd=tmp_path))
    assert "invalid_utf8" in result.stderr
    letters = [json.loads(line) for line in (store / "dead-letter.jsonl").read_text().splitlines()]
    assert [(letter["reason"], letter["offset"]) for letter in letters] == [("invalid_utf8", 2)]
    answer = json.loads(
        ok(
            run(
                "get", "u-bad", "--signal", "action_counts", "--as-of", str(END_MS),
                "--store", store, cwd=tmp_path,
            )
        ).stdout
    )  # fmt: skip
    assert answer["signals"]["action_counts"]["value"]["total"] == 3


@pytest.mark.parametrize(
    ("option", "value", "parameter"),
    [
        ("--as-of", "0", "as_of"),
        ("--until", "99999999999999999", "until"),
        ("--since", "-5", "since"),
    ],
)
def test_get_with_a_time_out_of_range_prints_one_line(
    tmp_path: Path, option: str, value: str, parameter: str
) -> None:
    store = replayed_store(tmp_path)
    result = run(
        "get", "u-bad", "--signal", "category_interest", option, value, "--store", store,
        cwd=tmp_path,
    )  # fmt: skip
    assert_one_error_line(result, parameter)
    decayed = run(
        "get", "u-bad", "--signal", "category_interest", "--as-of", "2000-01-01T00:00:00Z",
        "--store", store, cwd=tmp_path,
    )  # fmt: skip
    # Decayed sums cannot take back later events: one line naming the signal, exit 2.
    assert decayed.returncode == 2, decayed.stderr
    assert "Traceback" not in decayed.stderr
    refused = decayed.stderr.strip().splitlines()
    assert len(refused) == 1, decayed.stderr
    assert refused[0].startswith("error: as_of: signal 'category_interest' cannot answer")


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        ("produce", "--partitions", "0"),
        ("produce", "--events", "-5"),
        ("produce", "--rate", "-1"),
        ("generate", "--events", "-5"),
        ("demo", "--events", "-1"),
        ("demo", "--rate", "-1"),
        ("demo", "--port", "70000"),
        ("serve", "--workers", "0"),
        ("serve", "--port", "0"),
        ("replay", "--batch", "0"),
    ],
)
def test_a_count_out_of_range_is_a_usage_error_naming_the_option(
    tmp_path: Path, command: str, option: str, value: str
) -> None:
    """Before: `produce --partitions 0` hung with no output (a topic of 0 partitions made),
    `--events -5` named an internal class, `--rate -1` passed."""
    needs = {
        "produce": ["--kafka", "127.0.0.1:1"],
        "generate": ["--out", str(tmp_path / "g")],
        "replay": [str(tmp_path / "none.jsonl")],
    }
    result = run(command, *needs.get(command, []), option, value, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert option in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("x = 1\n", "error: signals module {path!r} defines no Signal"),
        (
            "raise RuntimeError('boom')\n",
            "error: signals module {path!r} failed to import: RuntimeError: boom (line 1)",
        ),
        (
            "from usersignals import Count, Signal\n"
            "SIGNALS = [Signal(name='a', version=1, aggregate=Count())] * 2\n",
            "error: the signals are invalid: signal 'a@1' is defined 2 times",
        ),
    ],
    ids=["no signal", "raises", "twice"],
)
def test_a_bad_signals_module_is_named_in_one_line(
    tmp_path: Path, source: str, expected: str
) -> None:
    """Before: the module's internal name (``usersignals_user_signals_<hash>``), a
    traceback, and "signal '<module>' is invalid"."""
    module = tmp_path / "badmod.py"
    module.write_text(source)
    result = run("signals", "compile", module, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(expected.format(path=str(module))), lines[0]


def test_a_replay_says_when_a_lookup_source_failed_rather_than_lacked_records(
    tmp_path: Path,
) -> None:
    """With `on_failure = "missing"` an unreachable source leaves fields missing; the
    summary used to count them as events with no record, as if the source had answered."""
    config = tmp_path / "usersignals.toml"
    config.write_text(
        '[enrich.sources.items]\nkind = "http"\nurl = "http://127.0.0.1:1/lookup"\n'
        'on_failure = "missing"\nretries = 1\n'
    )
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(good_event()) + "\n")
    result = ok(
        run("replay", events, "--store", tmp_path / "store", "--config", config, cwd=tmp_path)
    )
    assert "lookup source failures" in result.stderr, result.stderr
    assert "'items'" in result.stderr.split("lookup source failures", 1)[1]


def test_a_path_of_the_wrong_kind_is_one_line(tmp_path: Path) -> None:
    """helper-32: a spool or dead-letter path that is a file (or under one), or a directory
    where a file goes, ended in a traceback; a directory given as the events or table file
    was reported as missing."""
    (tmp_path / "afile").write_text("")
    (tmp_path / "adir").mkdir()
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(good_event()) + "\n" + "{oops\n")
    cases = [
        (("run", "--store", "s1", "--spool", "afile"), "afile"),
        (("replay", events, "--store", "s2", "--dead-letter", "afile/x.jsonl"), "afile"),
        (("replay", events, "--store", "s3", "--dead-letter", "adir"), "adir"),
        (("replay", "adir", "--store", "s4"), "is a directory"),
        (("tables", "load", "items", "adir", "--store", "s5"), "is a directory"),
    ]
    for args, named in cases:
        result = run(*args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr, args
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, (args, result.stderr)
        assert named in errors[0], (args, errors[0])


def test_get_with_a_user_id_that_is_not_utf8_prints_one_line(tmp_path: Path) -> None:
    store = replayed_store(tmp_path)
    # The byte 0xFF on the command line: Python hands it over as the lone surrogate \udcff.
    result = run("get", "u-\udcff", "--signal", "action_counts", "--store", store, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: user_id: ")
    assert "UTF-8" in lines[0]


@pytest.mark.parametrize(
    ("option", "parameter"), [("--exclude", "exclude"), ("--actions", "actions")]
)
def test_get_with_a_list_value_that_is_not_utf8_prints_one_line(
    tmp_path: Path, option: str, parameter: str
) -> None:
    store = replayed_store(tmp_path)
    result = run(
        "get", "u-bad", "--signal", "recent_engagements", option, "i1,\udcff", "--store", store,
        cwd=tmp_path,
    )  # fmt: skip
    assert_one_error_line(result, parameter)
