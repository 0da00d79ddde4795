"""Shadow versions over real HTTP: served only when named, and a cut-over seen by every
serving worker without a restart."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from offline_helpers import new_store, random_history, stream
from service_helpers import free_port, stop_process, wait_ready
from test_versions import module

from usersignals import SignalRegistry

BIN = Path(sys.executable).parent / "usersignals"
SHADOWED = 'SIGNALS = [clicks, interests(1, "7d"), interests(2, "3d", True)]\n'


def serve(root: Path, signals: str, workers: int) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    env = {
        **os.environ,
        "USERSIGNALS_STORE__PATH": str(root / "store"),
        "USERSIGNALS_SPOOL__PATH": str(root / "spool"),
        "USERSIGNALS_SERVING__REFRESH_INTERVAL_MS": "50",
    }
    # The module given as `run` takes it: every worker serves it (a trial looked for the
    # option, which `serve` alone lacked).
    command = [str(BIN), "serve", "--port", str(port), "--workers", str(workers)]
    command += ["--signals", signals]
    return wait_ready(port, subprocess.Popen(command, env=env, cwd=root))


def test_shadow_served_by_name_and_cutover_reaches_every_worker(tmp_path: Path) -> None:
    history = random_history(31, events=600, users=20)
    signals = module(tmp_path, "shadowed", SHADOWED)
    store = new_store(tmp_path / "store", history)
    try:
        stream(store, history, 67, registry=SignalRegistry.from_module(signals))
    finally:
        store.close()
    user = history.events[0].user_id
    # Read as of the history's end: it lies months back, past the retention from today.
    end = max(event.ts for event in history.events)
    url, server = serve(tmp_path, signals, workers=2)
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            path = f"/v1/users/{user}/signals"
            default = client.get(path).json()["signals"]
            assert set(default) == {"clicks", "interests"}
            assert default["interests"]["version"] == 1
            both = client.get(path, params={"names": "interests,interests@2"}).json()["signals"]
            assert both["interests"]["version"] == 1
            assert both["interests@2"]["version"] == 2
            body = {
                "users": [user],
                "signals": ["interests", "interests@2"],
                "context": {"as_of": end},
                "contexts": {"interests@2": {"limit": 1, "as_of": end}},
            }
            (batch,) = client.post("/v1/signals/batch", json=body).json()["results"]
            assert len(batch["signals"]["interests@2"]["value"]) == 1
            assert batch["signals"]["interests"]["version"] == 1
            unknown = client.get(path, params={"names": "interests@3"})
            assert unknown.status_code == 404
            assert "interests@2" in unknown.json()["known"]

            cutover = [str(BIN), "signals", "cutover", "interests@2", "--grace", "1h"]
            env = {
                "USERSIGNALS_STORE__PATH": str(tmp_path / "store"),
                "USERSIGNALS_SIGNALS": signals,
            }
            done = subprocess.run(
                cutover, env={**os.environ, **env}, capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, done.stderr
            # Both workers catch up on their own refresh: 20 answers in a row from v2, each on
            # a new connection (a kept-alive one would stay with one worker).
            in_a_row = 0
            deadline = time.monotonic() + 20
            while in_a_row < 20 and time.monotonic() < deadline:
                fresh = httpx.get(f"{url}{path}", params={"names": "interests"}, timeout=10)
                served = fresh.json()["signals"]
                in_a_row = in_a_row + 1 if served["interests"]["version"] == 2 else 0
            assert in_a_row == 20
            # In the grace period the old version is still there, by name@version.
            old = client.get(path, params={"names": "interests@1"}).json()["signals"]
            assert old["interests@1"]["version"] == 1
            # Found by the operator's trial: a version asked for by name@version is answered
            # under that key before and after the cut-over (it became "interests", and a
            # client reading "interests@2" broke at the cut-over); asked for by its name and
            # by name@version at once, it is under both keys, once each (the GET answer held
            # "interests" twice).
            for params in ({"names": "interests@2"}, {"names": "interests,interests@2"}):
                response = client.get(path, params=params)
                assert response.text.count('"interests@2":') == 1, response.text
                assert response.json()["signals"]["interests@2"]["version"] == 2
            pinned = {"users": [user], "signals": ["interests@2"], "context": {"as_of": end}}
            (batch,) = client.post("/v1/signals/batch", json=pinned).json()["results"]
            assert set(batch["signals"]) == {"interests@2"}
    finally:
        stop_process(server)
