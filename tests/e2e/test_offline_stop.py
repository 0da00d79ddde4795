"""Stopping an offline job from outside: SIGTERM (what a scheduler or ``kill`` sends) stops
``backfill`` and ``training-set`` as Ctrl-C does, and SIGKILL of the command takes its
workers with it. Nothing is left behind: no worker process, no scratch directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tests.waiting import alive, children_of, wait_for

BIN = Path(sys.executable).parent
CLI = str(BIN / "usersignals")
#: Enough events that the job still runs well after its workers have started.
EVENTS = 600_000


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("archive")
    subprocess.run(
        [CLI, "generate", "--out", str(root), "--events", str(EVENTS)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    lines = (root / "events.jsonl").read_bytes().splitlines()[:2000:50]
    users = sorted({msgspec.json.decode(line)["user_id"] for line in lines})
    pq.write_table(
        pa.table({"user_id": users, "ts": [2_000_000_000_000] * len(users)}),
        root / "labels.parquet",
    )
    return root


def job(kind: str, archive: Path, work: Path) -> list[str]:
    store = ["--store", str(work / "store"), "--signals", "usersignals.examples.reference"]
    events = ["--events", str(archive / "events.jsonl"), "--workers", "2"]
    if kind == "backfill":
        return [CLI, "backfill", *events, *store]
    return [CLI, "training-set", "--labels", str(archive / "labels.parquet"), *events,
            "--out", str(work / "features.parquet"), *store]  # fmt: skip


def start(
    command: list[str], work: Path, session: bool = False, settle_s: float = 0.3
) -> tuple[subprocess.Popen[bytes], set[int]]:
    """The job, once its worker runs (``settle_s`` later); and its worker processes.
    ``session``: in a process group of its own, as a terminal runs it (Ctrl-C reaches the
    whole group)."""
    scratch = work / "tmp"
    scratch.mkdir()
    items = command[command.index("--events") + 1].replace("events.jsonl", "items.jsonl")
    store = command[command.index("--store") + 1]
    load = [CLI, "tables", "load", "items", items, "--key", "item_id", "--store", store]
    subprocess.run(load, check=True, capture_output=True, timeout=120)
    env = {**os.environ, "TMPDIR": str(scratch)}
    process = subprocess.Popen(
        command, cwd=work, env=env, stderr=subprocess.PIPE, start_new_session=session
    )
    try:
        wait_for(lambda: children_of(process.pid), 60, "a worker process", alive=process)
        time.sleep(settle_s)  # into the shards' work
        if process.poll() is not None:
            raise AssertionError(f"the job ended before it could be stopped: {process.stderr}")
        return process, children_of(process.pid)
    except BaseException:  # a failed start leaves no job running
        kill_left(children_of(process.pid))
        process.kill()
        process.wait(timeout=30)
        raise


def left_behind(work: Path) -> list[str]:
    """Scratch the job made and should have removed: its temporary directories, and a
    backfill's scratch beside the store."""
    names = [path.name for path in (work / "tmp").iterdir()]
    if (work / "store").exists():
        names += [p.name for p in work.iterdir() if p.name.startswith(".usersignals-")]
    return names


@pytest.mark.parametrize("kind", ["backfill", "training-set"])
def test_sigterm_stops_the_job_and_its_workers_and_leaves_no_scratch(
    kind: str, archive: Path, tmp_path: Path
) -> None:
    process, workers = start(job(kind, archive, tmp_path), tmp_path)
    try:
        process.send_signal(signal.SIGTERM)
        # Not communicate(): an orphaned worker would hold the pipe open.
        process.wait(timeout=60)
        assert process.stderr is not None
        stderr = process.stderr.read().decode() if not any(map(alive, workers)) else ""
        assert process.returncode == 128 + signal.SIGTERM, stderr
        assert "Traceback" not in stderr, stderr
        wait_for(lambda: not any(alive(pid) for pid in workers), 10, "the workers to exit")
        assert left_behind(tmp_path) == []
    finally:
        kill_left(workers)
        process.stderr.close()


def kill_left(workers: set[int]) -> None:
    """Should a test fail, it leaves no process either."""
    for pid in workers:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_killed_job_takes_its_workers_with_it(archive: Path, tmp_path: Path) -> None:
    process, workers = start(job("backfill", archive, tmp_path), tmp_path)
    process.kill()
    process.wait(timeout=30)
    try:
        wait_for(lambda: not any(alive(pid) for pid in workers), 10, "the workers to exit")
    finally:
        kill_left(workers)
        assert process.stderr is not None
        process.stderr.close()


@pytest.mark.parametrize("kind", ["backfill", "training-set"])
def test_ctrl_c_stops_the_job_and_its_workers_without_a_traceback(
    kind: str, archive: Path, tmp_path: Path
) -> None:
    """Found in an ML engineer's trial: Ctrl-C (SIGINT to the terminal's process group) on a
    job with `--workers 2` printed a worker's KeyboardInterrupt traceback."""
    # At once: the worker is still starting (importing), before its handlers are set.
    process, workers = start(job(kind, archive, tmp_path), tmp_path, session=True, settle_s=0)
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=60)
        wait_for(lambda: not any(alive(pid) for pid in workers), 10, "the workers to exit")
        assert process.stderr is not None
        stderr = process.stderr.read().decode()
        assert process.returncode == 130, stderr
        assert "Traceback" not in stderr, stderr
        assert left_behind(tmp_path) == []
    finally:
        kill_left(workers)
        process.stderr.close()
