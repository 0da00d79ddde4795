"""The tests' own Redis Cluster (``devtools/redis_cluster.py``) never outlives a failed start.

Two test runs on one machine can pick the same free port; a node that answers on it but
belongs to the other run makes ``redis-cli --cluster create`` fail. The nodes already
started must then be stopped, not left running (four were found orphaned after such a run).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from usersignals.devtools import redis_cluster
from usersignals.devtools.redis_cluster import LocalRedisCluster


def test_a_cluster_that_fails_to_form_stops_its_nodes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    failing_cli = tmp_path / "redis-cli"
    failing_cli.write_text("#!/bin/sh\nexit 1\n")
    failing_cli.chmod(0o755)
    real_which = shutil.which
    monkeypatch.setattr(
        redis_cluster.shutil,
        "which",
        lambda name: str(failing_cli) if name == "redis-cli" else real_which(name),
    )
    cluster = LocalRedisCluster(primaries=3, replicas_per_primary=0)
    with pytest.raises(subprocess.CalledProcessError):
        cluster.start()
    running = subprocess.run(["pgrep", "-f", "redis-server"], capture_output=True, text=True)
    ours = [port for port in cluster.ports if f":{port} " in _commands(running.stdout)]
    assert ours == []


def _commands(pids: str) -> str:
    commands = []
    for pid in pids.split():
        cmdline = Path(f"/proc/{pid}/cmdline")
        if cmdline.exists():
            commands.append(cmdline.read_bytes().replace(b"\0", b" ").decode())
    return "\n".join(commands) + "\n"
