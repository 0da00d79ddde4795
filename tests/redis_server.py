"""A real redis-server on a loopback port, started and stopped by the tests themselves."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import redis


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """``persistent``: every write is fsynced to an append-only file, so the server can be
    killed and started again (same port, same data) to test an outage."""

    def __init__(self, persistent: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is needed: apt-get install redis-server")
        self._binary = binary
        self.persistent = persistent
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.mkdtemp(prefix="usersignals-redis-")
        self.start()

    def start(self) -> None:
        durability = ["--appendonly", "yes", "--appendfsync", "always"]
        if not self.persistent:
            durability = ["--appendonly", "no"]
        self._process = subprocess.Popen(
            [self._binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             *durability, "--dir", self._dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    self.stop()
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)
        client.close()

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would; ``start`` brings it back."""
        self._process.kill()
        self._process.wait()

    @property
    def pid(self) -> int:
        """The server's process id (to freeze it with SIGSTOP, say)."""
        return self._process.pid

    def pause(self) -> None:
        """SIGSTOP: the server keeps its connections but answers nothing (hung, or cut off)."""
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self._process.poll() is None:
            self.resume()  # a paused server would never answer the shutdown
            # A shutdown drops the connection: that error is the success.
            with contextlib.suppress(redis.RedisError):
                redis.Redis(port=self.port).shutdown(nosave=True)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self._dir, ignore_errors=True)
