"""``python -m usersignals.devtools.broker``, the README's local broker: stopped with SIGTERM
(``kill``, ``kill %1``) as with Ctrl-C, it takes the broker it started with it."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from usersignals.devtools.broker import free_port
from waiting import alive, children_of, wait_for


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_the_broker_command_stops_its_broker(stop: signal.Signals) -> None:
    command = [sys.executable, "-m", "usersignals.devtools.broker", "--port", str(free_port())]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    children: list[int] = []
    try:
        assert "Kafka-protocol broker on" in process.stdout.readline()
        children = list(wait_for(lambda: children_of(process.pid), 30, "the broker process"))
        process.send_signal(stop)
        process.wait(timeout=30)
        wait_for(lambda: not any(map(alive, children)), 10, "the broker to stop")
    finally:
        for pid in children:
            if alive(pid):
                subprocess.run(["kill", "-9", str(pid)], check=False)
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        process.stdout.close()
