"""``python -m usersignals.devtools.broker``, the README's local broker, and
``python -m usersignals.devtools.redis_cluster``: stopped with SIGTERM (``kill``, ``kill %1``)
as with Ctrl-C, each takes the servers it started with it."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from usersignals.devtools.broker import free_port
from waiting import alive, children_of, wait_for

COMMANDS = {
    "broker": (["usersignals.devtools.broker", "--port", str(free_port())], "Kafka-protocol"),
    # Found by the operator's trial: SIGTERM ended it at once and left its 6 nodes running.
    "redis-cluster": (["usersignals.devtools.redis_cluster"], "Redis Cluster on"),
}


@pytest.mark.parametrize("tool", sorted(COMMANDS))
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_the_command_stops_what_it_started(stop: signal.Signals, tool: str) -> None:
    arguments, says = COMMANDS[tool]
    process = subprocess.Popen(
        [sys.executable, "-m", *arguments], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    children: list[int] = []
    try:
        assert says in process.stdout.readline()
        children = list(wait_for(lambda: children_of(process.pid), 30, "the servers it started"))
        process.send_signal(stop)
        process.wait(timeout=30)
        wait_for(lambda: not any(map(alive, children)), 10, "the servers to stop")
    finally:
        for pid in children:
            if alive(pid):
                subprocess.run(["kill", "-9", str(pid)], check=False)
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        process.stdout.close()


@pytest.mark.parametrize("tool", sorted(COMMANDS))
def test_help_says_what_the_command_does_and_starts_nothing(tool: str) -> None:
    """Found by the operator's trial: `redis_cluster --help` started a cluster of 6 nodes."""
    module = COMMANDS[tool][0][0]
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ")
    assert "stop with Ctrl-C" not in done.stdout
