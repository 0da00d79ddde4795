"""How an offline job stops when it is told to from outside.

Ctrl-C reaches the job's whole process group: the command raises ``KeyboardInterrupt``, its
workers ``SystemExit``, and each cleans up on its way out. SIGTERM (what ``kill``, a
scheduler or a container runtime sends) reaches the command's process alone; by default it
died on the spot, leaving its scratch directories behind and its workers running on as
orphans, holding its output pipes open. :func:`terminated_as_interrupted` makes SIGTERM stop
the job as Ctrl-C does; :func:`start_worker`, run first in each worker, has it stop the same
way, and also when the command dies without a word (killed with SIGKILL, or crashing). Both
stops go through :func:`~usersignals.uninterrupted.raise_stop`, so a section that must not
be cut (a temporary directory being made) finishes first; a second stop ends a process at
once, rather than raising again in the middle of the cleanup the first one started.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from usersignals.libc import prctl
from usersignals.uninterrupted import raise_stop, uninterrupted

_PR_SET_PDEATHSIG = 1  # prctl's option number (linux/prctl.h)
#: The signals that stop a job: a worker starts with them blocked (:func:`workers_start_held`).
STOPS = frozenset({signal.SIGINT, signal.SIGTERM})


@contextmanager
def terminated_as_interrupted() -> Iterator[None]:
    """Within: SIGTERM stops the job's workers at once and exits this process with status
    143 (128 + SIGTERM) through the usual unwinding, so every ``with`` and ``finally`` on
    the way out runs (scratch directories removed, stores closed). Only in the main thread,
    where Python runs signal handlers; elsewhere nothing changes."""
    try:
        previous = {
            signal.SIGTERM: signal.signal(signal.SIGTERM, _stop),
            signal.SIGINT: signal.signal(signal.SIGINT, _interrupted),
        }
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for signum, handler in previous.items():
            if handler is not None:  # None: a handler not set from Python, which stays
                signal.signal(signum, handler)


def _stops_end_at_once() -> None:
    """A second stop (some schedulers repeat SIGTERM; a user presses Ctrl-C twice) ends the
    process at once, rather than raising again in the middle of the first one's cleanup."""
    for signum in STOPS:
        signal.signal(signum, signal.SIG_DFL)


def _stop(signum: int, frame: FrameType | None) -> None:
    _stops_end_at_once()
    # The workers first: they stop as this process does (see start_worker), and waiting for
    # a shard's result ends as soon as they have.
    for worker in multiprocessing.active_children():
        worker.terminate()
    raise_stop(SystemExit(128 + signum))


def _interrupted(signum: int, frame: FrameType | None) -> None:
    # Python's own Ctrl-C, through raise_stop (the workers have it too: the process group).
    _stops_end_at_once()
    raise_stop(KeyboardInterrupt())


def _unwind(signum: int, frame: FrameType | None) -> None:
    _stops_end_at_once()
    raise_stop(SystemExit(128 + signum))


@contextmanager
def workers_start_held() -> Iterator[None]:
    """Within: the workers started (spawned) start with SIGINT and SIGTERM blocked, as this
    thread has them (a new process inherits its starter's mask), until a worker unblocks
    them where a stop unwinds it cleanly (:func:`take_stops`). A Ctrl-C reaching a worker
    while it still imported the package printed its KeyboardInterrupt traceback. This
    process still stops, Python runs its handlers whichever thread the kernel chose, but
    only once the section is over (:func:`~usersignals.uninterrupted.uninterrupted`): cut
    between spawning a worker and writing it its instructions, it left the worker to die on
    the short read with a traceback (``EOFError: Ran out of input``, seen under load)."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
    try:
        with uninterrupted():
            yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def take_stops() -> None:
    """In a worker, where a stop unwinds it: the stops that came while it started, now."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)


def start_worker(parent: int) -> None:
    """A worker's first call: SIGTERM unwinds it as it does the parent (its store closed,
    its scratch removed), and the kernel sends it SIGTERM when its parent dies (Linux;
    strictly, when the thread that started it ends: the job's main thread).

    Without the second, a parent that dies without stopping its workers (SIGKILL, a crash)
    left them running their shards to the end, for nobody."""
    signal.signal(signal.SIGTERM, _unwind)
    signal.signal(signal.SIGINT, _unwind)  # as SIGTERM: no KeyboardInterrupt traceback
    prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(128 + signal.SIGTERM)  # nothing to unwind yet
