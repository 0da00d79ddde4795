"""The README's version workflow (plan → backfill → apply → run → diff → cut-over) runs as
written: its module is the file the commands use, and its commands run against a store
replayed from the reference workload by the deployed version alone."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from usersignals import RocksStore
from usersignals.config import Settings
from usersignals.offline import BackfillJob, backfill
from usersignals.state.keys import SIGNALS_KEY

README = Path(__file__).resolve().parents[2] / "README.md"
BIN = Path(sys.executable).parent


def section() -> str:
    return README.read_text().split("## New signal versions", 1)[1].split("\n## ", 1)[0]


def run(command: list[str], cwd: Path) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{command}: {done.stderr}"
    return done.stdout


def run_in_shadow(command: list[str], cwd: Path) -> None:
    """``usersignals run`` as a reader runs it: started, left until it has recorded the
    versions it computes (the new one among them), then stopped (SIGTERM) for the cut-over."""
    log = cwd / "run.log"
    with log.open("w") as errors, subprocess.Popen(command, cwd=cwd, stderr=errors) as processor:
        try:
            deadline = time.monotonic() + 60
            while not recorded(cwd / "data" / "store", "interests@2"):
                assert processor.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the processor did not record its signals"
                time.sleep(0.2)
        finally:
            processor.send_signal(signal.SIGTERM)
            assert processor.wait(timeout=60) == 0, log.read_text()


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
    deployed = module.replace("SIGNALS = [interests_v1, interests_v2]", "SIGNALS = [interests_v1]")
    assert deployed != module
    (tmp_path / "deployed.py").write_text(deployed)
    usersignals = str(BIN / "usersignals")
    run([usersignals, "generate", "--out", "data/workload", "--events", "3000"], tmp_path)
    store = ["--store", "data/store"]
    run([usersignals, "tables", "load", "items", "data/workload/items.jsonl", *store], tmp_path)
    replay = [usersignals, "replay", "data/workload/events.jsonl", "--signals", "deployed.py"]
    run([*replay, *store], tmp_path)
    (tmp_path / "data" / "archive").mkdir()
    (tmp_path / "data" / "workload" / "events.jsonl").rename(
        tmp_path / "data" / "archive" / "events.jsonl"
    )

    outputs: dict[str, str] = {}
    for line in commands.strip().splitlines():
        argv = shlex.split(line, comments=True)
        assert argv[0] == "usersignals"
        if argv[1] == "run":
            run_in_shadow([str(BIN / argv[0]), *argv[1:]], tmp_path)
            continue
        if argv[1] == "backfill":
            # `usersignals backfill` is the offline part's command; its library call, with the
            # README's arguments, until both land on one branch.
            options = dict(zip(argv[2::2], argv[3::2], strict=True))
            settings = Settings.load(
                environ={},
                overrides={
                    "signals": str(tmp_path / options["--signals"]),
                    "store": {"path": str(tmp_path / options["--store"])},
                },
            )
            summary = backfill(
                BackfillJob(
                    str(tmp_path / options["--events"]), settings, only=(options["--only"],)
                )
            )
            assert summary.events > 0
            continue
        outputs[argv[2]] = run([str(BIN / argv[0]), *argv[1:]], tmp_path)

    assert "interests@2" in outputs["plan"]
    assert "yes" in outputs["plan"]  # needs backfill
    diff = json.loads(outputs["diff"])
    assert diff["users"] > 0
    assert diff["changed"] > 0  # a 3-day half-life scores differently from a 7-day one
    assert json.loads(outputs["cutover"])["previous"] == "interests@1"
    user = diff["examples"][0]["user_id"]
    get = [usersignals, "get", user, "--signal", "interests", "--signals", "my_signals.py"]
    served = json.loads(run([*get, *store], tmp_path))["signals"]["interests"]
    assert served["version"] == 2
    # The same profile as v2 in the diff (scores decay with the clock between the two reads).
    assert [entry["key"] for entry in served["value"]] == [
        entry["key"] for entry in diff["examples"][0]["new"]
    ]
