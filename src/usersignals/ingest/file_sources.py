"""Which file a replay's progress belongs to.

A replayed file's events are positioned ``(file:<name>, line number)``, and each user's
record keeps the highest line applied per source id: that is what makes a second replay of
the file change nothing, and lines appended to it later count. Two different files of one
name (``d1/events.jsonl`` and ``d2/events.jsonl``, a day's export and the next day's) would
share the id, and the second file's lines at or below a user's progress would be skipped as
applied: lost, beyond the reach of the event-id de-duplication's horizon.

So the store keeps, per ``file:`` source id, a fingerprint of the first line of the file
replayed under it (the first line, because a file that grew since keeps it). A file whose
first line matches is the same file; another file of the name is replayed under an id of
its own, ``file:<name>#<fingerprint>``, kept the same way, so it too can be replayed again
or grow. A store whose files were replayed before these records existed has none: the
first file replayed under a name after the upgrade is taken to be the one replayed before,
and the replay says so (it cannot tell).
"""

from __future__ import annotations

import logging
import zlib

import msgspec

from usersignals.errors import ConfigurationError
from usersignals.ingest.files import JsonlSource
from usersignals.state.keys import FILE_SOURCES_KEY, USER_PREFIX
from usersignals.state.store import StateStore

logger = logging.getLogger(__name__)

_decoder = msgspec.json.Decoder(dict[str, str])


def claim_source_id(store: StateStore, source: JsonlSource) -> str:
    """The source id ``source``'s lines are positioned under in ``store``, recorded there
    with the file's fingerprint; a ``source_id`` its caller gave is used as it is."""
    first = source.first_line()
    if source.named or first is None:  # no event yet, or one still being written
        return source.source_id
    fingerprint = f"{zlib.crc32(first):08x}"
    with store.metadata_lock():
        raw = store.get_many([FILE_SOURCES_KEY])[0]
        known = _known(raw)
        if raw is None and next(iter(store.scan(USER_PREFIX)), None) is not None:
            logger.warning(
                "this store holds users but no record of the files replayed into it (it was "
                "written before such records were kept, or by a stream only): %s is taken to "
                "be any file named %s replayed into it before (its lines already applied are "
                "skipped); if it is another file, replay it with --source-id",
                source.path, source.path.name,
            )  # fmt: skip
        source_id = source.default_id
        if known.get(source_id, fingerprint) != fingerprint:
            source_id = f"{source.default_id}#{fingerprint}"
            logger.warning(
                "%s: another file named %s was replayed into this store before (its first "
                "line differs): this one's progress is kept apart, as %s",
                source.path, source.path.name, source_id,
            )  # fmt: skip
        if known.get(source_id) != fingerprint:
            known[source_id] = fingerprint
            store.write({FILE_SOURCES_KEY: msgspec.json.encode(known)})
    return source_id


def _known(raw: bytes | None) -> dict[str, str]:
    if raw is None:
        return {}
    try:
        return _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise ConfigurationError(
            f"the store's record of replayed files cannot be read: {exc}"
        ) from exc
