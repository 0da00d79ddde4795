"""The allocators in our own processes: large freed blocks go back to the OS, and the offline
jobs run without transparent huge pages.

RocksDB allocates its write buffers (memtables) in arena blocks of several MB and frees
them when a memtable is flushed. glibc maps a block that large with mmap at first, but every
munmap of one raises its mmap threshold to that size (the "dynamic threshold", up to
32 MB), so later blocks come from the heap, and once freed they stay in the process. The
processor's RSS therefore kept the high-water mark of its write buffers and crept up:
``bench/engine.py --rss`` went from 822 MB at 1 M events to 922 MB at 4 M, while the write
buffers themselves held 45-96 MB throughout. A fixed threshold turns the dynamic one off:
blocks of :data:`MMAP_THRESHOLD_BYTES` and more are mapped and unmapped, and the RSS
follows what is in use.

Python's objects (pymalloc arenas) and the core's (mimalloc) do not go through glibc's
malloc and are not concerned; smaller blocks keep glibc's usual heap.

The core's mimalloc asks for transparent huge pages on its arenas; after it returns freed
memory to the OS (between batches, see ``crates/usersignals-py/src/allocator.rs``), touching
it again faults in a whole 2 MiB page the kernel zeroes. In a training-set run that page
clearing was about a tenth of the CPU (``perf``), and the run took 5-15 % less wall clock
without huge pages; the engine's rate and RSS did not move either way (``bench/engine.py
--rss``, 2 M events). The offline commands therefore turn them off for their process tree
(:func:`no_huge_pages`; children inherit it). mimalloc reads its own setting when it loads,
before any of our code runs, so this is done with ``prctl``.
"""

from __future__ import annotations

import ctypes
import os

from usersignals.libc import libc_function, prctl

#: Blocks this large or larger are mapped on their own: RocksDB's arena blocks (8 MB with
#: the default 64 MB write buffer) are. Not much lower: at 1 MiB, blocks that a batch
#: allocates and frees every time (a write batch growing, say) were mapped and faulted in
#: again each batch, and the engine ran about 5 % slower (bench/engine.py, 1 M events:
#: 18.1-18.3 s of CPU against 16.9-17.7 s at 4 and 8 MiB and under glibc's default).
MMAP_THRESHOLD_BYTES = 4 << 20
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
_ENVIRONMENT = "MALLOC_MMAP_THRESHOLD_"
_PR_SET_THP_DISABLE = 41  # prctl's option number (linux/prctl.h)
_THP_ENVIRONMENT = "MIMALLOC_ALLOW_THP"


def return_large_blocks() -> bool:
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD_BYTES` for this process.

    False, and nothing changed, when ``MALLOC_MMAP_THRESHOLD_`` is set (the operator's
    setting wins; glibc read it at start) or the C library has no ``mallopt`` (not glibc).
    """
    if _ENVIRONMENT in os.environ:
        return False
    mallopt = libc_function("mallopt", ctypes.c_int, ctypes.c_int)
    return mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def no_huge_pages() -> bool:
    """No transparent huge pages for this process and the processes it starts.

    False, and nothing changed, when ``MIMALLOC_ALLOW_THP`` is set (the operator's setting
    wins; mimalloc read it at start) or the system has no such ``prctl`` (not Linux).
    """
    return _THP_ENVIRONMENT not in os.environ and prctl(_PR_SET_THP_DISABLE, 1)
