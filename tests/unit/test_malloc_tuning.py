"""Large blocks freed by native code go back to the OS (``usersignals.malloc_tuning``).

RocksDB frees a memtable's arena blocks (8 MB each by default) after a flush; with glibc's
dynamic mmap threshold the second round of such blocks came from the heap and stayed in the
process when freed, so the processor's RSS kept its high-water mark. Measured here the way
RocksDB allocates: C ``malloc``/``free`` of 8 MB blocks, touched, in a fresh process.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from usersignals import malloc_tuning

# A fresh interpreter: the threshold is process-wide, and glibc's dynamic adjustment
# depends on what the process freed before.
_PROBE = """
import ctypes, os, sys
from usersignals import malloc_tuning
if sys.argv[1] == "tuned":
    assert malloc_tuning.return_large_blocks()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
page = os.sysconf("SC_PAGE_SIZE")

def rss() -> int:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * page

size = 8 << 20
first = libc.malloc(size)  # mapped; freeing it raises glibc's dynamic threshold to 8 MB
ctypes.memset(first, 1, size)
libc.free(first)
before = rss()
block = libc.malloc(size)
ctypes.memset(block, 1, size)
pin = libc.malloc(64 << 10)  # still in use, above the block: the heap cannot shrink past it
ctypes.memset(pin, 1, 64 << 10)
libc.free(block)
print(rss() - before)
"""


def retained_after_free(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_large_blocks_leave_the_process() -> None:
    assert retained_after_free("tuned") < 1 << 20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_without_the_tuning_glibc_keeps_them() -> None:
    """The reason for the module: glibc's default keeps them (if this fails, a newer glibc
    no longer does, and the tuning can go). Most of the 8 MB block, not all: heap pages the
    interpreter touched before ``before`` was read are reused by the block and not counted
    (8,241,152 bytes here on 2026-11-26, where the tuned run keeps 0)."""
    assert retained_after_free("default") >= 6 << 20


def test_an_explicit_threshold_in_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert malloc_tuning.return_large_blocks() is False


# A fresh interpreter again: the setting is process-wide and cannot be undone by a test.
_THP_PROBE = """
import subprocess, sys
from usersignals import malloc_tuning

def thp(status: str) -> str:
    return next(line.split()[1] for line in status.splitlines() if line.startswith("THP_enabled"))

before = thp(open("/proc/self/status").read())
done = malloc_tuning.no_huge_pages()
child = subprocess.run(["cat", "/proc/self/status"], capture_output=True, text=True, check=True)
print(before, done, thp(open("/proc/self/status").read()), thp(child.stdout))
"""


def _thp_probe(environment: dict[str, str]) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _THP_PROBE],
        capture_output=True, text=True, check=True, env=environment,
    )  # fmt: skip
    return done.stdout.split()


def _has_thp_status() -> bool:
    try:
        with open("/proc/self/status") as status:
            return "THP_enabled" in status.read()
    except OSError:
        return False


@pytest.mark.skipif(not _has_thp_status(), reason="Linux's per-process THP setting")
def test_the_offline_jobs_turn_huge_pages_off_for_themselves_and_their_children() -> None:
    environment = {k: v for k, v in os.environ.items() if k != "MIMALLOC_ALLOW_THP"}
    assert _thp_probe(environment) == ["1", "True", "0", "0"]


@pytest.mark.skipif(not _has_thp_status(), reason="Linux's per-process THP setting")
def test_mimallocs_own_setting_in_the_environment_wins() -> None:
    assert _thp_probe({**os.environ, "MIMALLOC_ALLOW_THP": "1"}) == ["1", "False", "1", "1"]
