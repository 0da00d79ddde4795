"""Large blocks freed by native code go back to the OS (``usersignals.malloc_tuning``).

RocksDB frees a memtable's arena blocks (8 MB each by default) after a flush; with glibc's
dynamic mmap threshold the second round of such blocks came from the heap and stayed in the
process when freed, so the processor's RSS kept its high-water mark. Measured here the way
RocksDB allocates: C ``malloc``/``free`` of 8 MB blocks, touched, in a fresh process.
"""

from __future__ import annotations

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
    no longer does, and the tuning can go)."""
    assert retained_after_free("default") >= 8 << 20


def test_an_explicit_threshold_in_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert malloc_tuning.return_large_blocks() is False
