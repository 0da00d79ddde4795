"""`serve --mode raw` on a store that keeps no raw events is one line and exit 2: found in a
newcomer's trial, it printed "serving on ...", then each worker failed on the missing table
in a loop of tracebacks, and the command ended with status 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from usersignals.devtools.broker import free_port

BIN = Path(sys.executable).parent


def test_raw_mode_on_a_store_without_raw_events_is_refused_in_one_line(tmp_path: Path) -> None:
    event = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "action": "click",
             "surface": "home", "ts": 1_767_225_600_000}  # fmt: skip
    (tmp_path / "events.jsonl").write_text(json.dumps(event) + "\n")
    (tmp_path / "counts.py").write_text(
        "from usersignals import Count, Signal\n"
        'SIGNALS = [Signal(name="n", version=1, aggregate=Count(by="action"), retention="7d")]\n'
    )
    env = {**os.environ, "COLUMNS": "400", "USERSIGNALS_SIGNALS": str(tmp_path / "counts.py")}
    store = ["--store", str(tmp_path / "s")]
    replay = [str(BIN / "usersignals"), "replay", str(tmp_path / "events.jsonl"), *store]
    assert subprocess.run(replay, env=env, capture_output=True, timeout=120).returncode == 0
    serve = [str(BIN / "usersignals"), "serve", "--mode", "raw", "--port", str(free_port()),
             *store]  # fmt: skip
    done = subprocess.run(serve, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "keep_raw_events" in lines[0]
