"""Lookup sources: where the Materializer fetches external data from, in batches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import msgspec

from usersignals.state.store import KeyValueTable

Record = dict[str, Any]


class LookupSource(Protocol):
    """Fetches records by key, many at a time. Absent keys are simply not in the result."""

    name: str

    def fetch(self, keys: Sequence[str]) -> Mapping[str, Record]: ...


_record_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(dict[str, Any])


def encode_table_record(record: Mapping[str, Any]) -> bytes:
    return _record_encoder.encode(record)


class TableSource:
    """An embedded table in the state store (loaded with ``usersignals tables load``)."""

    def __init__(self, name: str, table: KeyValueTable) -> None:
        self.name = name
        self._table = table

    def fetch(self, keys: Sequence[str]) -> dict[str, Record]:
        values = self._table.get_many([key.encode() for key in keys])
        decode = _record_decoder.decode
        return {key: decode(value) for key, value in zip(keys, values, strict=True) if value}
