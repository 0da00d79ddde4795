"""A port that is taken or out of range stops `serve` and `run` with one line, exit 2.

Before: a second `serve` on a port in use started anyway and shared it with the first
(granian listens with ``SO_REUSEPORT``): the kernel split requests between two deployments.
`run --metrics-port` out of range or in use, and `serve` with `serving.metrics_port` in use,
ended in tracebacks (the latter in a granian worker crash loop, after "serving on").
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli import CLI, good_event, ok, run

from usersignals.devtools.broker import free_port


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port some other program listens on (loopback, plain bind: no port sharing)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(good_event()) + "\n")
    ok(run("replay", events, "--store", tmp_path / "store", cwd=tmp_path))
    return tmp_path / "store"


def serve(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> Result:
    """`usersignals serve`, which must exit by itself: a server still up after 20 s is
    stopped (its whole process group) and fails the test."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("USERSIGNALS_")}
    command = [str(CLI), "serve", *map(str, args)]
    process = subprocess.Popen(
        command, cwd=cwd, env={**environment, **(env or {})}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail("serve started on a port it cannot have to itself")
    return Result(process.returncode, stdout, stderr)


class Result:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def one_line(result: Result | subprocess.CompletedProcess[str], starts: str) -> None:
    stderr = result.stderr
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(starts), lines[0]


def test_serve_on_a_port_in_use_refuses(store: Path, taken_port: int, tmp_path: Path) -> None:
    result = serve("--store", store, "--port", str(taken_port), cwd=tmp_path)
    one_line(result, f"error: serving.port {taken_port}: cannot listen on 127.0.0.1")
    assert "serving on" not in result.stdout


def test_serve_with_its_metrics_port_in_use_refuses(
    store: Path, taken_port: int, tmp_path: Path
) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        api_port = free.getsockname()[1]
    environment = {"USERSIGNALS_SERVING__METRICS_PORT": str(taken_port)}
    result = serve("--store", store, "--port", str(api_port), cwd=tmp_path, env=environment)
    one_line(result, f"error: serving.metrics_port {taken_port}: cannot listen on 127.0.0.1")


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_run_with_a_metrics_port_out_of_range_refuses(
    store: Path, tmp_path: Path, port: str
) -> None:
    result = run(
        "run", "--store", store, "--spool", tmp_path / "spool", "--metrics-port", port,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "--metrics-port" in result.stderr


def test_run_with_its_metrics_port_in_use_refuses(
    store: Path, taken_port: int, tmp_path: Path
) -> None:
    result = run(
        "run", "--store", store, "--spool", tmp_path / "spool", "--metrics-port",
        str(taken_port), cwd=tmp_path,
    )  # fmt: skip
    one_line(result, f"error: --metrics-port {taken_port}: cannot listen on 127.0.0.1")


def test_serve_with_a_spool_path_that_is_a_file_refuses(store: Path, tmp_path: Path) -> None:
    """helper-32: each worker failed to make the spool and granian gave up on a crash loop,
    after "serving on"."""
    (tmp_path / "afile").write_text("")
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        api_port = free.getsockname()[1]
    result = serve("--store", store, "--port", str(api_port), "--spool", "afile", cwd=tmp_path)
    one_line(result, "error: File exists: 'afile'")


@pytest.mark.parametrize(
    ("env", "starts"),
    [
        (
            {"USERSIGNALS_SERVING__FEATURE_LOG_PATH": "/etc/hostname/feature-log"},
            "error: setting serving.feature_log_path = '/etc/hostname/feature-log' is not allowed",
        ),
        (
            {
                "USERSIGNALS_SERVING__FEATURE_LOG_SINK": "kafka",
                "USERSIGNALS_SERVING__FEATURE_LOG_TOPIC": "features",
                "USERSIGNALS_SERVING__FEATURE_LOG_BOOTSTRAP_SERVERS": "127.0.0.1:9",
                "USERSIGNALS_KAFKA__PRODUCER__NO_SUCH_PROPERTY": "1",
            },
            "error: kafka.producer: No such configuration property",
        ),
    ],
    ids=["unwritable-path", "unknown-producer-property"],
)
def test_a_feature_log_that_cannot_work_stops_serve_in_one_line(
    store: Path, tmp_path: Path, env: dict[str, str], starts: str
) -> None:
    """Found by the consistency trial: both crashed every worker at its start (a traceback,
    then granian's "crash loop detected"), after "serving on": a sampled log took the
    whole API down."""
    port = free_port()
    result = serve("--store", store, "--port", str(port), cwd=tmp_path, env=env)
    one_line(result, starts)
    assert "serving on" not in result.stdout


def test_a_producer_setting_written_with_underscores_is_taken(tmp_path: Path) -> None:
    """As `kafka.consumer` already was: an environment variable cannot hold dots, so
    KAFKA__PRODUCER__MESSAGE_TIMEOUT_MS means message.timeout.ms (found by the same trial)."""
    from usersignals.config import Settings
    from usersignals.errors import ConfigurationError
    from usersignals.serving.feature_sinks import KafkaSink

    settings = Settings.load(environ={"USERSIGNALS_KAFKA__PRODUCER__MESSAGE_TIMEOUT_MS": "8000"})
    KafkaSink("127.0.0.1:9", "features", settings.kafka.producer).close()
    # Its value reaches librdkafka under the dotted name, which checks it there.
    settings = Settings.load(environ={"USERSIGNALS_KAFKA__PRODUCER__MESSAGE_TIMEOUT_MS": "soon"})
    with pytest.raises(ConfigurationError, match=r"message\.timeout\.ms"):
        KafkaSink("127.0.0.1:9", "features", settings.kafka.producer)
