"""Backpressure on the spool: a bounded backlog, and a full disk, give 503 — and lose nothing.

Real ``usersignals serve`` and ``usersignals run`` processes on loopback; the disk-full case
writes the spool to a real, small tmpfs mounted by the test (root only).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from accepted_helpers import (
    clicks,
    environment,
    event_body,
    post,
    start_processor,
    start_server,
    status,
    stop,
)

from waiting import wait_for

PER_REQUEST = 100


def post_until_refused(url: str, user: str, limit: int) -> tuple[int, httpx.Response | None]:
    """Posts batches until a non-202; returns the events acknowledged and the refusal."""
    accepted = 0
    for request in range(limit):
        response = post(url, event_body(user, f"{user}-{request}", PER_REQUEST))
        if response.status_code != 202:
            return accepted, response
        accepted += PER_REQUEST
    return accepted, None


def test_a_full_backlog_answers_503_and_not_ready_until_the_processor_catches_up(
    tmp_path: Path,
) -> None:
    env = environment(
        tmp_path,
        USERSIGNALS_SPOOL__MAX_BACKLOG_BYTES="40000",
        USERSIGNALS_SPOOL__RETRY_AFTER_S="2",
    )
    url, server = start_server(env)
    processor = None
    try:
        assert status(f"{url}/readyz") == 200
        accepted, refused = post_until_refused(url, "u1", limit=100)  # the processor is down
        assert refused is not None, f"{accepted} events acknowledged, none refused"
        assert refused.status_code == 503
        assert refused.json()["error"] == "backlog_full"
        assert refused.headers["retry-after"] == "2"
        assert 0 < accepted < 10_000
        ready = httpx.get(f"{url}/readyz", timeout=5)
        assert ready.status_code == 503
        assert ready.json()["status"] == "backlog_full"
        assert ready.json()["backlog_bytes"] > 40_000
        metrics = httpx.get(f"{url}/metrics", timeout=5).text
        assert "usersignals_ingest_backlog_bytes" in metrics
        assert 'usersignals_http_events_refused_total{reason="backlog_full"}' in metrics

        processor = start_processor(env)
        wait_for(lambda: status(f"{url}/readyz") == 200, 60, "the backlog to drain")
        assert post(url, event_body("u1", "after", PER_REQUEST)).status_code == 202
        wait_for(lambda: clicks(url, "u1") == accepted + PER_REQUEST, 60, "every event")
    finally:
        stop(server)
        if processor is not None:
            assert stop(processor) == 0


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for a real full disk needs root")
    path.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (no CAP_SYS_ADMIN?): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_answers_503_and_a_refused_request_is_never_applied(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "spool", "256k") as spool:
        env = environment(
            tmp_path,
            USERSIGNALS_SPOOL__PATH=str(spool),
            USERSIGNALS_SPOOL__MIN_FREE_BYTES="0",  # reach the real ENOSPC
        )
        url, server = start_server(env)
        processor = None
        try:
            accepted, refused = post_until_refused(url, "u1", limit=200)
            assert refused is not None, f"{accepted} events acknowledged on a 256 KiB disk"
            assert refused.status_code == 503
            assert refused.json()["error"] == "disk_full"
            assert int(refused.headers["retry-after"]) > 0
            ready = httpx.get(f"{url}/readyz", timeout=5)
            assert ready.status_code == 503
            assert ready.json()["status"] == "disk_full"
            # The refused request left nothing behind: every spooled line is a whole,
            # acknowledged event.
            spooled = b"".join(path.read_bytes() for path in sorted(spool.glob("*.jsonl")))
            assert spooled.endswith(b"\n")
            assert spooled.count(b"\n") == accepted

            processor = start_processor(env)
            wait_for(lambda: clicks(url, "u1") == accepted, 60, "every acknowledged event")
            assert stop(processor) == 0
            assert clicks(url, "u1") == accepted  # and nothing of the refused request
        finally:
            stop(server)
            if processor is not None:
                stop(processor)
