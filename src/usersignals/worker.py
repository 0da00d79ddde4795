"""The ASGI entry point of a serving worker process (granian imports it in each worker).

Settings come from the environment (``USERSIGNALS_*``, and ``USERSIGNALS_CONFIG`` for a
file), which ``usersignals serve`` passes on to its workers. It lives beside the composition
root, not in ``usersignals.serving``: serving is built by the root and never imports it.
"""

from __future__ import annotations

from usersignals.app import build_serving_state
from usersignals.assembly import once_the_store_answers
from usersignals.config import Settings
from usersignals.malloc_tuning import return_large_blocks
from usersignals.serving.gc_policy import install_gc_policy
from usersignals.serving.http import ServingApp, create_app


def create() -> ServingApp:
    # First: a worker's RocksDB secondary replays the writer's log into memtables it frees.
    return_large_blocks()
    settings = Settings.load()
    # A Redis that is down is waited for: a worker that exited here instead, respawned
    # during an outage, would make granian stop the whole server (a crash loop).
    state = once_the_store_answers(settings, lambda: build_serving_state(settings))
    assert state is not None  # no stop event: it returns only with the state
    app = create_app(state)
    # Last: it freezes what was built. The fast path keeps the policy's books too.
    app.fast_read.policy = install_gc_policy(app, settings.serving.gc, state.metrics)
    return app
