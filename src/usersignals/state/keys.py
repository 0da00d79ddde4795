"""The key layout of the state store, in one place.

One record per user holds every signal's state and the user's progress, so a micro-batch does
one read and one write per user, and serving answers any set of a user's signals with one
read. Keys are ``u:`` + the UTF-8 user id; other prefixes are reserved for metadata.
"""

from __future__ import annotations

USER_PREFIX = b"u:"
META_PREFIX = b"m:"
TABLE_PREFIX = "table."


def user_key(user_id: str) -> bytes:
    return USER_PREFIX + user_id.encode()


def user_of(key: bytes) -> str:
    return key[len(USER_PREFIX) :].decode()


RAW_EVENTS_TABLE = "raw_events"


def raw_events_prefix(user_id: str) -> bytes:
    return user_id.encode() + b"\x00"


def raw_event_key(user_id: str, ts: int, event_id: str) -> bytes:
    """``user \\0 time (8 bytes, big-endian) event id``: a user's raw events in time order."""
    return raw_events_prefix(user_id) + ts.to_bytes(8, "big") + event_id.encode()


def meta_key(name: str) -> bytes:
    return META_PREFIX + name.encode()


#: Held by a command while it changes the store's metadata (``StateStore.metadata_lock``),
#: where the store is shared by processes (Redis).
METADATA_LOCK_KEY = meta_key("lock")
#: The processor's record of the signals it computes (``usersignals.signals.identity``).
SIGNALS_KEY = meta_key("signals")
#: A backfill's hand-over offsets, ``topic/partition`` → the next offset, as JSON: where the
#: stream continues from (``usersignals.offline.bulk_load``).
BACKFILL_OFFSETS_KEY = meta_key("backfill_offsets")
#: The files replayed into the store, ``file:`` source id → the fingerprint of the file's
#: first line, as JSON: which file a source id's progress belongs to
#: (``usersignals.ingest.file_sources``).
FILE_SOURCES_KEY = meta_key("file_sources")


def table_column(name: str) -> str:
    """The column family (RocksDB) or key namespace of an enrichment table."""
    return TABLE_PREFIX + name
