"""The ASGI entry point of a serving worker process (granian imports it in each worker).

Settings come from the environment (``USERSIGNALS_*``, and ``USERSIGNALS_CONFIG`` for a
file), which ``usersignals serve`` passes on to its workers. It lives beside the composition
root, not in ``usersignals.serving``: serving is built by the root and never imports it.
"""

from __future__ import annotations

from starlette.applications import Starlette

from usersignals.app import build_serving_state
from usersignals.config import Settings
from usersignals.serving.http import create_app


def create() -> Starlette:
    return create_app(build_serving_state(Settings.load()))
