"""Waiting for a condition with a bounded timeout, instead of sleeping and hoping."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T | None],
    timeout_s: float,
    what: str,
    poll_s: float = 0.05,
    alive: subprocess.Popen[str] | subprocess.Popen[bytes] | None = None,
) -> T:
    """Poll ``condition`` until it returns something truthy, and return that.

    Fails with ``what`` in the message after ``timeout_s``, or as soon as the ``alive``
    process has exited (no point waiting on a dead process).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if alive is not None and alive.poll() is not None:
            raise AssertionError(f"the process exited ({alive.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(poll_s)


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, exited but not reaped, does not)."""
    from pathlib import Path

    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
