"""Sections of code that a stop raised from a signal handler must not cut in two.

An offline job stops on SIGTERM by raising ``SystemExit`` from its handler, which Python runs
in the main thread between any two bytecodes. A few steps are not safe to cut anywhere: a
``tempfile.TemporaryDirectory()`` cut after its directory is made and before its finalizer
is registered leaves the directory behind for good. Within :func:`uninterrupted`, a stop
raised through :func:`raise_stop` waits for the section's end.

Blocking the signal (``pthread_sigmask``) would not do it: the kernel hands a signal the main
thread blocks to another thread (RocksDB's own), and Python still runs the handler in the
main thread at its next bytecode.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_depth = 0
_pending: BaseException | None = None


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Within (in the main thread, where handlers run): a stop waits until the end."""
    global _depth, _pending
    if threading.current_thread() is not threading.main_thread():
        yield  # a handler interrupts the main thread, never this one
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        stop, _pending = (_pending, None) if _depth == 0 else (None, _pending)
        if stop is not None:
            raise stop


def temporary_directory(
    prefix: str, parent: Path | None = None, ignore_cleanup_errors: bool = False
) -> tempfile.TemporaryDirectory[str]:
    """``tempfile.TemporaryDirectory(prefix=..., dir=parent)``, made whole before a stop is
    raised: the stop's unwinding then removes it (its finalizer, or the ``with`` it is in).
    ``ignore_cleanup_errors``: for a directory others write into (Spark's executors)."""
    with uninterrupted():
        return tempfile.TemporaryDirectory(
            prefix=prefix, dir=parent, ignore_cleanup_errors=ignore_cleanup_errors
        )


def raise_stop(stop: BaseException) -> None:
    """From a signal handler: raise ``stop`` now, or at the end of the section it landed in."""
    global _pending
    if _depth:
        _pending = _pending or stop
        return
    # Raised now, it supersedes one a section's end had yet to raise (a stop landing between
    # the section's last step and its raise): none is left to surface later, stale.
    _pending = None
    raise stop
