"""SIGTERM and Ctrl-C set the stop event of `run`, `serve` and `demo` without a deadlock.

Python runs a signal handler in the main thread between two bytecodes, wherever that thread
is. A handler calling ``Event.set()`` takes the event's lock, which the main thread may hold
already: ``Event.wait()`` holds it for a few bytecodes around each wait, and the processor's
idle loop waits on its stop event every 20 ms. A SIGTERM landing there blocked the handler on
its own thread's lock, and the processor never stopped (seen once in the suite: a processor
that did not exit within 30 s of SIGTERM)."""

from __future__ import annotations

import subprocess
import sys

# The main thread holds the stop event's lock when the signal arrives: the window
# Event.wait() opens, made certain here (the lock is the event's private condition's).
HOLDS_THE_LOCK_WHEN_SIGNALLED = """
import signal, sys
from usersignals.cli import _stop_on_signals

stop = _stop_on_signals()
with stop._cond:
    signal.raise_signal(signal.SIGTERM)  # the handler runs before the next bytecode
print("set" if stop.wait(10) else "not set", flush=True)
"""


def test_a_sigterm_while_the_main_thread_holds_the_stop_events_lock_stops_it() -> None:
    try:
        done = subprocess.run(
            [sys.executable, "-c", HOLDS_THE_LOCK_WHEN_SIGNALLED],
            capture_output=True,
            text=True,
            timeout=15,
        )
    except subprocess.TimeoutExpired:
        raise AssertionError("the signal handler deadlocked on the stop event's lock") from None
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "set"
