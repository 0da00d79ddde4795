"""Event sources: files, the synthetic reference workload (Kafka and HTTP come next)."""

from usersignals.ingest.files import JsonlSource, RawBlock

__all__ = ["JsonlSource", "RawBlock"]
