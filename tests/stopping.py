"""Stopping a `usersignals run` or `serve` process a test started, and, when it does not
stop, finding out why: SIGUSR1 makes it print every thread's stack to its stderr (the CLI
registers Python's faulthandler for it) before the test kills it."""

from __future__ import annotations

import signal
import subprocess
import time

#: Time given to the stacks to reach stderr before the process is killed.
DUMP_WAIT_S = 1.0

Process = subprocess.Popen[bytes] | subprocess.Popen[str]


def sigterm_and_wait(process: Process, timeout_s: float = 30) -> int:
    """SIGTERM, then its exit status; killed (status -9) after ``timeout_s``, its stacks
    printed first to the stderr it inherited (the test's captured output)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _dump_and_kill(process)
            process.wait()
    return process.returncode


def sigterm_and_communicate(
    process: subprocess.Popen[str], timeout_s: float = 60
) -> tuple[int, str]:
    """SIGTERM, then its exit status and its stderr (a pipe); a process still running after
    ``timeout_s`` is killed and fails the test with its threads' stacks."""
    process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _dump_and_kill(process)
        _, err = process.communicate()
        raise AssertionError(
            f"pid {process.pid} did not stop within {timeout_s:g} s of SIGTERM; its stderr, "
            f"its threads' stacks at the end:\n{err}"
        ) from None
    return process.returncode, err


def _dump_and_kill(process: Process) -> None:
    process.send_signal(signal.SIGUSR1)
    time.sleep(DUMP_WAIT_S)
    process.kill()
