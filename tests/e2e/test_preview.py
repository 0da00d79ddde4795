"""``usersignals signals preview``: a module's signals over sample events, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

CLI = Path(sys.executable).parent / "usersignals"
NOW = 1_767_225_600_000
MODULE = textwrap.dedent(
    """
    from usersignals import Count, LastN, Lookup, Signal, action

    items = Lookup("items", key="item_id", provides=("category",))
    clicks = Signal(name="clicks", version=1, where=action.eq("click"),
                    aggregate=Count(by="surface"), retention="7d")
    saved = Signal(name="saved", version=1, where=action.eq("save"),
                   enrich=[items.fields("category")],
                   aggregate=LastN(5, keep=("item_id", "category")), retention="7d")
    """
)


def line(user: str, item: str, action: str, ago_ms: int, surface: str = "home") -> str:
    return json.dumps(
        {
            "event_id": f"{user}-{ago_ms}",
            "user_id": user,
            "item_id": item,
            "action": action,
            "surface": surface,
            "ts": NOW - ago_ms,
        }
    )


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    (tmp_path / "signals.py").write_text(MODULE)
    (tmp_path / "items.jsonl").write_text(
        '{"item_id": "i1", "category": "cats"}\n{"item_id": "i2", "category": "dogs"}\n'
    )
    events = [
        line("u1", "i1", "click", 2 * 3_600_000, "search"),
        line("u1", "i2", "click", 60_000),
        line("u1", "i1", "save", 30_000),
        line("u2", "i2", "save", 0),
        '{"user_id": "u3"}',  # bad: missing fields; counted, not fatal
    ]
    (tmp_path / "events.jsonl").write_text("\n".join(events) + "\n")
    return tmp_path


def preview(sample: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(CLI),
            "signals",
            "preview",
            str(sample / "signals.py"),
            "--events",
            str(sample / "events.jsonl"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"NO_COLOR": "1"},
    )


def as_json(sample: Path, *args: str) -> dict[str, Any]:
    result = preview(sample, "--table", f"items={sample / 'items.jsonl'}", "--json", *args)
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def values(document: dict[str, Any], user: str) -> dict[str, Any]:
    return {name: result["value"] for name, result in document["users"][user].items()}


def test_the_preview_says_its_bad_events_in_words(sample: Path) -> None:
    """Found in a newcomer's trial: a clean sample read "(0 bad: {})", a dict for people."""
    said = preview(sample, "--table", f"items={sample / 'items.jsonl'}")
    assert said.returncode == 0, said.stderr
    assert "4 good events read (1 bad: missing_field 1); as of the newest" in said.stderr
    (sample / "clean.jsonl").write_text(
        "".join(line + "\n" for line in (sample / "events.jsonl").read_text().splitlines()
                if "event_id" in line)
    )  # fmt: skip
    clean = preview(
        sample,
        "--events",
        str(sample / "clean.jsonl"),
        "--table",
        f"items={sample / 'items.jsonl'}",
    )
    assert "4 good events read (none bad); as of the newest" in clean.stderr, clean.stderr


def test_preview_prints_every_signals_answer_for_the_busiest_users(sample: Path) -> None:
    document = as_json(sample)
    assert (document["events"], document["bad"]) == (4, {"missing_field": 1})
    assert list(document["users"]) == ["u1", "u2"]
    assert values(document, "u1") == {
        "clicks": {"total": 2, "by": {"home": 1, "search": 1}},
        "saved": [{"ts": NOW - 30_000, "item_id": "i1", "category": "cats"}],
    }
    assert document["users"]["u1"]["clicks"]["age_ms"] == 60_000  # as of the newest event


def test_preview_one_user_with_a_context(sample: Path) -> None:
    document = as_json(sample, "--user", "u1", "--context", "window=1h")
    assert list(document["users"]) == ["u1"]
    assert values(document, "u1")["clicks"] == {"total": 1, "by": {"home": 1}}


def test_preview_shows_a_changed_signal(sample: Path) -> None:
    module = sample / "signals.py"
    module.write_text(module.read_text().replace('Count(by="surface")', 'Count(by="action")'))
    assert values(as_json(sample, "--user", "u1"), "u1")["clicks"] == {
        "total": 2,
        "by": {"click": 2},
    }


def test_preview_prints_a_table_for_people(sample: Path) -> None:
    result = preview(sample, "--table", f"items={sample / 'items.jsonl'}", "--user", "u2")
    assert result.returncode == 0, result.stderr
    assert "u2" in result.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((), "--table items=FILE"),
        (("--table", "items"), "--table takes NAME=VALUE"),
        (("--table", "items=x.jsonl", "--context", "window=forever"), "window: 'forever'"),
    ],
)
def test_bad_options_exit_2_with_one_line(sample: Path, args: tuple[str, ...], says: str) -> None:
    result = preview(sample, *args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert says in result.stderr


def test_preview_reads_the_archives_backfill_reads(sample: Path) -> None:
    # A Parquet export (and a directory of files) as backfill and training-set read them:
    # preview read every file as JSONL and called each row malformed_json.
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(text) for text in (sample / "events.jsonl").read_text().splitlines()]
    good = [row for row in rows if "event_id" in row]
    archive = sample / "archive" / "dt=2026-01-01"
    archive.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(good), archive / "part-0.parquet")
    for events in (archive / "part-0.parquet", sample / "archive"):
        result = subprocess.run(
            [
                str(CLI), "signals", "preview", str(sample / "signals.py"),
                "--events", str(events), "--table", f"items={sample / 'items.jsonl'}", "--json",
            ],
            capture_output=True, text=True, timeout=120, check=False, env={"NO_COLOR": "1"},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        document = json.loads(result.stdout)
        assert (document["events"], document["bad"]) == (4, {})
        assert values(document, "u1")["clicks"] == {"total": 2, "by": {"home": 1, "search": 1}}
