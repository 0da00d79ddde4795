"""``usersignals serve`` stops within a bound on SIGTERM, even when a worker does not.

granian waits for each worker to stop, and without a kill timeout it waits forever: a worker
that missed its SIGTERM (once seen in the scale-out test: the worker idle in its serve loop,
the main process joined on it) kept the server alive, and a test's kill of the main process
left the worker orphaned. A stopped worker (SIGSTOP) stands in for one that misses the signal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from service_helpers import free_port, wait_ready

from usersignals import RocksStore

BIN = Path(sys.executable).parent / "usersignals"


def test_a_worker_that_does_not_stop_is_killed_and_the_server_exits(tmp_path: Path) -> None:
    RocksStore(tmp_path / "store").close()
    port = free_port()
    env = {
        **os.environ,
        "USERSIGNALS_STORE__PATH": str(tmp_path / "store"),
        "USERSIGNALS_SPOOL__PATH": str(tmp_path / "spool"),
    }
    command = [str(BIN), "serve", "--port", str(port)]
    _, server = wait_ready(port, subprocess.Popen(command, env=env, cwd=tmp_path))
    workers = _children(server.pid)
    try:
        assert len(workers) == 1
        os.kill(workers[0], signal.SIGSTOP)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(workers[0]):
            time.sleep(0.05)
        assert not _alive(workers[0])
    finally:
        for pid in [server.pid, *workers]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        server.wait()


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(child) for child in found.stdout.split()]


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for its parent."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"
