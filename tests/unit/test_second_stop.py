"""A second stop ends an offline job at once: some schedulers repeat SIGTERM and users press
Ctrl-C twice, and a stop raised again in the middle of the first one's cleanup cut that
cleanup short with a traceback, or (a cleanup that hangs) never ended the job."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

_JOB = textwrap.dedent(
    """
    import os, signal, sys, time
    from usersignals.offline.stopping import terminated_as_interrupted

    with terminated_as_interrupted():
        try:
            os.kill(os.getpid(), signal.{first})
            time.sleep(5)
        finally:
            print("cleaning up", flush=True)
            os.kill(os.getpid(), signal.{second})
            time.sleep(5)  # a cleanup that takes long, or hangs
            print("cleanup finished", flush=True)
    """
)


@pytest.mark.parametrize(
    ("first", "second"), [("SIGTERM", "SIGTERM"), ("SIGINT", "SIGINT"), ("SIGTERM", "SIGINT")]
)
def test_a_second_stop_during_the_cleanup_ends_the_process_at_once(first: str, second: str) -> None:
    job = subprocess.run(
        [sys.executable, "-c", _JOB.format(first=first, second=second)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert job.stdout == "cleaning up\n", job.stderr
    # Killed by the second signal itself (its default action), not a Python exit.
    assert job.returncode == -getattr(signal, second), job.stderr
    assert "Traceback" not in job.stderr
