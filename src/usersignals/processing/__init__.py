"""The processing engine."""

from usersignals.processing.batch import BatchReport, MicroBatch
from usersignals.processing.engine import Engine

__all__ = ["BatchReport", "Engine", "MicroBatch"]
