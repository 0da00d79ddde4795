"""The README's version workflow (plan → backfill → apply → run → serve → diff → cut-over)
runs as written: its module is the file the commands use, and its commands run, line by line,
over the offline section's history (generated as that section does, smaller)."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from usersignals import RocksStore
from usersignals.devtools.broker import free_port
from usersignals.state.keys import SIGNALS_KEY, USER_PREFIX, user_of
from waiting import wait_for

README = Path(__file__).resolve().parents[2] / "README.md"
BIN = Path(sys.executable).parent


def section() -> str:
    return README.read_text().split("## New signal versions", 1)[1].split("\n## ", 1)[0]


def run(command: list[str], cwd: Path) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{command}: {done.stderr}"
    return done.stdout


def run_in_shadow(command: list[str], cwd: Path, store: Path) -> None:
    """``usersignals run`` as a reader runs it: started, left until it has recorded the
    versions it computes (the new one among them), then stopped (SIGTERM) for the cut-over."""
    log = cwd / "run.log"
    with log.open("w") as errors, subprocess.Popen(command, cwd=cwd, stderr=errors) as processor:
        try:
            deadline = time.monotonic() + 60
            while not recorded(store, "interests@2"):
                assert processor.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the processor did not record its signals"
                time.sleep(0.2)
        finally:
            processor.send_signal(signal.SIGTERM)
            assert processor.wait(timeout=60) == 0, log.read_text()


def serve_once(command: list[str], env: dict[str, str], cwd: Path, name: str) -> Any:
    """``usersignals serve`` as the README starts it (on a free port, not 8080): started,
    asked for ``name`` for the busiest stored user once ready, then stopped."""
    port = free_port()
    with subprocess.Popen([*command, "--port", str(port)], cwd=cwd, env=env) as server:
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for(lambda: ready(base), 60, "the server to be ready", alive=server)
            store = RocksStore(cwd / command[command.index("--store") + 1], read_only=True)
            try:
                user = user_of(next(key for key, _ in store.scan(USER_PREFIX)))
            finally:
                store.close()
            answer = httpx.get(f"{base}/v1/users/{user}/signals?names={name}", timeout=5)
            assert answer.status_code == 200, answer.text
            return answer.json()["signals"][name]
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)


def ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def recorded(store: Path, key: str) -> bool:
    """Whether the processor writing ``store`` has recorded that it computes ``key``."""
    reader = RocksStore(store, read_only=True)
    try:
        record = reader.get_many([SIGNALS_KEY])[0]
    finally:
        reader.close()
    return record is not None and key in json.loads(record)["signals"]


def test_the_version_workflow_runs_as_the_readme_shows(tmp_path: Path) -> None:
    text = section()
    (module,) = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    (commands,) = re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)
    (tmp_path / "my_signals.py").write_text(module)
    usersignals = str(BIN / "usersignals")
    history = ["--out", "data/history", "--end", "2026-01-15T00:00:00Z"]
    run([usersignals, "generate", *history, "--events", "3000"], tmp_path)
    outputs: dict[str, str] = {}
    for line in commands.strip().splitlines():
        argv = shlex.split(line, comments=True)
        settings = {}
        while "=" in argv[0]:  # VAR=value before the command, as a shell takes it
            name, _, value = argv.pop(0).partition("=")
            settings[name] = value
        assert argv[0] == ".venv/bin/usersignals", line
        argv[0] = usersignals
        store = tmp_path / argv[argv.index("--store") + 1]
        if argv[1] == "run":
            run_in_shadow(argv, tmp_path, store)
        elif argv[1] == "serve":
            shadow = serve_once(argv, {**os.environ, **settings}, tmp_path, "interests@2")
            assert shadow["version"] == 2  # the new version, served when named
        else:
            outputs[" ".join(argv[1:3])] = run(argv, tmp_path)

    assert "interests@2" in outputs["signals plan"]
    assert "yes" in outputs["signals plan"]  # needs backfill
    diff = json.loads(outputs["signals diff"])
    assert diff["users"] > 0
    assert diff["refused"] == 0  # as of the history's end: every user answers
    assert diff["changed"] > 0  # a 3-day half-life scores differently from a 7-day one
    assert "in place of interests@1" in " ".join(outputs["signals cutover"].split())
    user = diff["examples"][0]["user_id"]
    get = [usersignals, "get", user, "--signal", "interests", "--signals", "my_signals.py",
           "--as-of", "2026-01-15T00:00:00Z", "--store", "data/versions"]  # fmt: skip
    served = json.loads(run(get, tmp_path))["signals"]["interests"]
    assert served["version"] == 2
    assert served["value"] == diff["examples"][0]["new"]
