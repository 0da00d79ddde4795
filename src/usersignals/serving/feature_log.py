"""Feature logging: a sampled record of what the API answered, for the online/offline
consistency check (``usersignals consistency``) and for training on served values.

Each serving worker appends JSON lines to a file of its own in the configured directory
(``features-<pid>.jsonl``: several workers never interleave partial lines). A line holds the
user, the request's time ("now" of the view), its query parameters, and each signal's
version and value as served. Lines are flushed, not fsynced: a crash may lose the last few
lines of a sample, never corrupt the ones before.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from usersignals.serving.reader import UserSignals


class LoggedAnswer(msgspec.Struct):
    name: str
    version: int
    value: Any


class FeatureLogRecord(msgspec.Struct):
    user_id: str
    #: The request's time: the "now" the context was read at (ms since the epoch).
    ts: int
    #: The request's query parameters as given (``names`` included).
    params: dict[str, str]
    #: Per signal as the answer names it (``interests``, ``interests@2``).
    signals: dict[str, LoggedAnswer]


_encoder = msgspec.json.Encoder()


class FeatureLog:
    """Appends a sampled share (``rate``, 0 to 1) of answers to ``directory``."""

    def __init__(self, directory: Path, rate: float, seed: int | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"features-{os.getpid()}.jsonl"
        self.rate = rate
        self._random = random.Random(seed)
        self._file = self.path.open("ab")
        self._lock = threading.Lock()

    def sampled(self) -> bool:
        return self.rate >= 1.0 or (self.rate > 0.0 and self._random.random() < self.rate)

    def record(self, params: Mapping[str, str], now_ms: int, answer: UserSignals) -> None:
        signals = {
            label: LoggedAnswer(result.name, result.version, result.value)
            for label, result in answer.signals.items()
        }
        line = _encoder.encode(FeatureLogRecord(answer.user_id, now_ms, dict(params), signals))
        with self._lock:
            self._file.write(line + b"\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


def read_feature_log(path: Path) -> list[FeatureLogRecord]:
    """Every record of a log file, or of every ``*.jsonl`` file of a log directory."""
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    decoder = msgspec.json.Decoder(FeatureLogRecord)
    return [
        decoder.decode(line)
        for file in files
        for line in file.read_bytes().splitlines()
        if line.strip()
    ]
