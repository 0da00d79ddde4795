"""A store's metadata lock held by another thread, as another admin command would hold it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from usersignals.state.store import StateStore


@contextmanager
def metadata_lock_held(store: StateStore) -> Iterator[None]:
    """``store``'s metadata lock, taken on a thread of its own, held until the block ends."""
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with store.metadata_lock():
            held.set()
            done.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(10), "the lock was not taken"
        yield
    finally:
        done.set()
        thread.join()
