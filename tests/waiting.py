"""Waiting for a condition with a bounded timeout, instead of sleeping and hoping."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
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
    stat = _stat(Path("/proc") / str(pid))
    return stat is not None and stat[0] != "Z"


def children_of(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(entry)) is not None and int(stat[1]) == pid:
            found.add(int(entry.name))
    return found


def _stat(process: Path) -> list[str] | None:
    """A process's /proc stat fields after its name (state, parent, ...), or None if gone.
    The name is in parentheses and may hold spaces: the fields follow the last one."""
    try:
        return (process / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
