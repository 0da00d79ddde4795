"""A bad setting stops a command at start-up with one line, instead of a silent idle run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = Path(sys.executable).parent / "usersignals"


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        (
            "USERSIGNALS_PROCESSING__BATCH_SIZE",
            "-5",
            "setting processing.batch_size = '-5' is not allowed: expected an integer >= 1",
        ),
        (
            "USERSIGNALS_STORE__BACKEND",
            "nope",
            "setting store.backend = 'nope' is not allowed: "
            "expected one of 'redis', 'redis-cluster', 'rocksdb'",
        ),
    ],
)
def test_the_processor_refuses_a_bad_setting_at_start(
    tmp_path: Path, variable: str, value: str, says: str
) -> None:
    environ = {name: v for name, v in os.environ.items() if not name.startswith("USERSIGNALS_")}
    environ[variable] = value
    process = subprocess.Popen(
        [str(CLI), "run", "--store", str(tmp_path / "store"), "--spool", str(tmp_path / "spool")],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Before, a negative batch size left the runner polling forever, saying nothing.
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 2
    assert err == f"error: {says}\n"
