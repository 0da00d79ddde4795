"""A stop that lands while an offline job is starting a worker waits until the worker has
what it needs to start: the parent cut between spawning the worker and writing it its
instructions, and the worker died on the short read with ``EOFError: Ran out of input`` and a
traceback (seen on a loaded machine: tests/e2e/test_offline_stop.py's Ctrl-C test)."""

from __future__ import annotations

import signal
import subprocess
import sys

SCRIPT = """
import os, signal, threading, time
import multiprocessing.util as util
from usersignals.offline.common import ShardPool
from usersignals.offline.stopping import terminated_as_interrupted

spawn = util.spawnv_passfds

def spawned_then_stopped(path, args, passfds):
    pid = spawn(path, args, passfds)
    if any(b"spawn_main" in os.fsencode(arg) for arg in args):  # a worker, not the tracker
        os.killpg(0, signal.SIGINT)  # Ctrl-C, right after the worker exists, before its data
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:  # Python calls, where the main thread handles it
            time.sleep(0.001)
    return pid

util.spawnv_passfds = spawned_then_stopped
# A thread started before the workers, with the stops not blocked (a store's, say): the
# kernel hands it the signal, and Python runs the handler in the main thread at once.
threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
try:
    with terminated_as_interrupted():
        with ShardPool(2, "usersignals.offline.training"):
            pass
except KeyboardInterrupt:
    raise SystemExit(130) from None  # as the command line ends on Ctrl-C
"""


def test_a_ctrl_c_while_a_worker_starts_leaves_no_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True, text=True, timeout=60, start_new_session=True,
    )  # fmt: skip
    assert done.returncode == 128 + signal.SIGINT, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "EOFError" not in done.stderr, done.stderr
