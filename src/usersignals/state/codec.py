"""The binary codec of a user record: a version byte, then msgpack.

A record holds the user's progress (highest applied offset per source partition), each
signal's state as opaque bytes keyed by ``name@version``, and (since version 2) the
fingerprints of the event ids applied recently (:mod:`usersignals.processing.dedupe`).
Version 1 records, which have no fingerprints, are read as having none. States are decoded lazily: a
micro-batch decodes only the states its events touch and writes the others back untouched.
"""

from __future__ import annotations

import msgspec

from usersignals.errors import StateCodecError

CODEC_VERSION = 2
_READABLE = (1, 2)  # version 1 is version 2 without ``seen`` (the struct's default)
_HEADER = bytes([CODEC_VERSION])


class UserRecord(msgspec.Struct, array_like=True, gc=False):
    progress: dict[str, int]
    states: dict[str, msgspec.Raw]
    seen: dict[int, bytes] = {}


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(UserRecord)


def encode_record(record: UserRecord) -> bytes:
    """Canonical bytes: states and progress in key order, whatever order they were touched."""
    canonical = UserRecord(
        dict(sorted(record.progress.items())),
        dict(sorted(record.states.items())),
        dict(sorted(record.seen.items())),
    )
    return _HEADER + _encoder.encode(canonical)


def decode_record(key: bytes, data: bytes) -> UserRecord:
    if not data or data[0] not in _READABLE:
        version = data[0] if data else None
        raise StateCodecError(key, f"unknown codec version {version!r}, expected {CODEC_VERSION}")
    try:
        return _decoder.decode(memoryview(data)[1:])
    except msgspec.DecodeError as exc:
        raise StateCodecError(key, str(exc)) from exc
