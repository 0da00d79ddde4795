"""The offline jobs' process pool: the tasks' results in order, and workers that do not run
the parent's main script again (the `usersignals` command's: the whole CLI to import)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import os, sys
from pathlib import Path

if __name__ == "__mp_main__":  # what a spawned worker would run the main script as
    Path(os.environ["RERUN_MARKER"]).write_text("the main script ran again")
if __name__ == "__main__":
    from usersignals.offline.common import ShardPool

    with ShardPool(3, "builtins") as pool:
        print(pool.run(abs, [-1, -2, -3]), sys.modules["__main__"].__spec__)
"""


def test_workers_do_not_run_the_parents_main_script_again(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    marker = tmp_path / "rerun"
    done = subprocess.run(
        [sys.executable, str(script)],
        env={"RERUN_MARKER": str(marker), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    # The results in the tasks' order; the main module's spec as it was (none, by path).
    assert done.stdout.split() == ["[1,", "2,", "3]", "None"]
    assert not marker.exists()


def _no_children_left() -> None:
    """Wait (30 s at most) for this process's child processes to have exited."""
    import multiprocessing
    import time

    deadline = time.monotonic() + 30
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert multiprocessing.active_children() == []


def test_the_workers_stop_once_the_results_are_in() -> None:
    """The caller goes on while the workers exit (the pool does not wait for them), and
    they do exit: none is left running."""
    from usersignals.offline.common import ShardPool

    with ShardPool(3, "builtins") as pool:
        assert pool.run(abs, [-4, -5, -6]) == [4, 5, 6]
    _no_children_left()


def test_a_command_waits_for_the_workers_of_its_finished_jobs() -> None:
    """What a command calls before it ends (``wait_for_workers``): every worker of every
    job it ran has exited when it returns, and it holds no pool any more."""
    import multiprocessing

    from usersignals.offline import common

    for _ in range(2):
        with common.ShardPool(2, "builtins") as pool:
            assert pool.run(abs, [-1, -2]) == [1, 2]
    common.wait_for_workers()
    assert multiprocessing.active_children() == []
    assert common._winding_down == []


def test_the_pool_starts_its_workers_on_entering_and_waits_for_them_after_an_error() -> None:
    """The workers start up while the job still plans (before any task is there); a job
    that fails meanwhile leaves none running behind it."""
    import multiprocessing

    import pytest

    from usersignals.offline.common import ShardPool

    _no_children_left()  # an earlier test's workers may still be exiting

    def plan_and_fail() -> None:
        with ShardPool(3, "usersignals.offline.training") as pool:
            assert len(multiprocessing.active_children()) == 2
            with pytest.raises(ValueError, match="4 tasks for 2 workers"):
                pool.run(abs, [-1, -2, -3, -4])
            raise RuntimeError("planning failed")

    with pytest.raises(RuntimeError, match="planning failed"):
        plan_and_fail()
    assert multiprocessing.active_children() == []


def write_late_or_fail(task: tuple[str, str]) -> None:
    """A shard's task for the test below, ``(kind, directory)``: ``"write"`` says it has
    started, then writes ``shard-1`` a second later, as a shard writes into the job's
    scratch; ``"fail"`` waits until the writer has started, then raises."""
    import time

    kind, directory = task
    started, written = Path(directory) / "started", Path(directory) / "shard-1"
    if kind == "write":
        started.write_text("")
        time.sleep(1.0)
        written.write_text("written")
        return
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    raise RuntimeError("the first shard failed")


def test_a_failed_shard_returns_only_once_the_others_are_done(tmp_path: Path) -> None:
    """When the first shard fails, run raises only after the others stopped: the caller
    removes its scratch directory next, and no worker may still write into it."""
    import pytest

    from usersignals.offline.common import ShardPool

    seen: list[bool] = []

    def fail_with_a_worker_running() -> None:
        with ShardPool(2, __name__) as pool:
            try:
                pool.run(write_late_or_fail, [("fail", str(tmp_path)), ("write", str(tmp_path))])
            finally:  # where a job's scratch directory is removed, before the pool's exit
                seen.append((tmp_path / "shard-1").exists())

    with pytest.raises(RuntimeError, match="the first shard failed"):
        fail_with_a_worker_running()
    assert seen == [True]


WARMING = """
import multiprocessing, sys, time
sys.path.insert(0, sys.argv[1])
if __name__ == "__main__":
    from usersignals.offline.common import ShardPool

    with ShardPool(2, "slow_import") as pool:
        time.sleep(0.5)  # the worker is up, importing the job's module
        print(*[child.pid for child in multiprocessing.active_children()], flush=True)
        time.sleep(60)
"""


def test_a_worker_warming_up_dies_with_its_killed_parent(tmp_path: Path) -> None:
    """The worker imports the job's module first; its parent killed then (SIGKILL), it must
    not stay behind waiting for a task (a reviewer's finding: it did, with its parent
    gone, for good)."""
    import os
    import signal
    import time

    from tests.waiting import alive

    (tmp_path / "slow_import.py").write_text("import time\ntime.sleep(3)\n")
    script = tmp_path / "job.py"
    script.write_text(WARMING)
    parent = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    workers = [int(pid) for pid in parent.stdout.readline().split()]
    assert len(workers) == 1
    parent.kill()
    parent.wait(timeout=30)
    parent.stdout.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(alive(pid) for pid in workers):
        time.sleep(0.1)
    left = [pid for pid in workers if alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == []


HALF_OPEN = """
import sys, tempfile
from usersignals.offline.common import _in_worker

class HalfOpen:
    def __init__(self, scratch):
        self.reader = tempfile.TemporaryDirectory(prefix="half-", dir=scratch)
        raise SystemExit(143)  # SIGTERM's unwinding (offline/stopping.py), mid-open

_in_worker(HalfOpen, sys.argv[1])
"""


def test_a_worker_stopped_mid_open_leaves_no_scratch(tmp_path: Path) -> None:
    """Found under load (tests/e2e/test_offline_stop.py with three pytest workers): a SIGTERM
    that landed while a shard opened its read-only store left the store's temporary
    directory behind. The worker ends with os._exit, which runs no finalizer, and the
    half-made store was still held by the stop's traceback."""
    script = tmp_path / "worker.py"
    script.write_text(HALF_OPEN)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    done = subprocess.run(
        [sys.executable, str(script), str(scratch)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 143, done.stderr
    assert list(scratch.iterdir()) == []
