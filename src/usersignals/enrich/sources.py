"""Lookup sources: where the Materializer fetches external data from, in batches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import msgspec

from usersignals._core import packed_records
from usersignals.enrich.packed import PackedRecord
from usersignals.errors import EnrichmentError, StoreError
from usersignals.events.decode import UNDECODABLE
from usersignals.state.store import KeyValueTable

Record = Mapping[str, Any]


class LookupSource(Protocol):
    """Fetches records by key, many at a time. Absent keys are simply not in the result.

    A source raises :class:`EnrichmentError` when it cannot answer (and only then: anything
    else is a bug, and is not retried). A record is a dict, or a
    :class:`~usersignals.enrich.packed.PackedRecord` (msgpack bytes the core reads without
    decoding them into Python objects); any other value is passed on as it is: the
    Materializer counts it and treats the key as absent.

    A source may say ``reads_ahead = True`` when its ``fetch`` is safe to call from another
    thread than the lookups' and cheap to call for keys that end up unused: the Kafka
    processor then fetches its next block's keys ahead, on its fetch thread
    (:meth:`~usersignals.enrich.materializer.Materializer.read_ahead`). The embedded table
    does; a remote source, whose failures the lookups' policy rides out, does not.
    """

    name: str

    def fetch(self, keys: Sequence[str]) -> Mapping[str, Any]: ...


_record_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(dict[str, Any])


def encode_table_record(record: Mapping[str, Any]) -> bytes:
    return _record_encoder.encode(record)


class TableSource:
    """An embedded table in the state store (loaded with ``usersignals tables load``); its
    records come as :class:`~usersignals.enrich.packed.PackedRecord` where the core reads
    them, else decoded into dicts."""

    #: The store's reads are thread-safe (RocksDB's; Redis's through a connection pool), and
    #: one multi-get of a batch's keys cheap (see LookupSource).
    reads_ahead = True

    def __init__(self, name: str, table: KeyValueTable) -> None:
        self.name = name
        self._table = table

    def fetch(self, keys: Sequence[str]) -> dict[str, Any]:
        # In key order: a batch's keys are read in calls of a few hundred, and each call's
        # keys, neighbours in the memtable's skip list and the table files' blocks, then share
        # their cache lines (25,600 random keys of a 256,000-record table: 3.5 µs a key in
        # the caller's order, 1.6 µs sorted). The answer is a mapping: the order is not kept.
        keys = sorted(keys)
        try:
            values = self._table.get_many([key.encode() for key in keys])
        except StoreError as exc:
            raise EnrichmentError(self.name, str(exc), type(exc).__name__) from exc
        records: dict[str, Any]
        records, others = packed_records(PackedRecord, keys, values)
        if not others:
            return records
        for index in others:  # not packed (rare): decoded the Python way
            value = values[index]
            if value:  # an empty value holds no record: the key is absent
                records[keys[index]] = _unpacked_record(value)
        return {key: records[key] for key in keys if key in records}  # in key order


def _unpacked_record(value: bytes) -> Any:
    try:
        return _record_decoder.decode(value)
    except (msgspec.DecodeError, UnicodeDecodeError):  # the latter: a text not UTF-8
        return value  # not a record: counted by the Materializer, the key is absent


class RedisHashSource:
    """Records as Redis hashes, one per key (``<prefix><key>``), fetched with one pipeline.

    Hash fields are strings; a field holding JSON (a number, a list such as an embedding) is
    decoded, anything else is kept as a string.
    """

    def __init__(self, name: str, url: str, prefix: str = "", timeout_s: float = 1.0) -> None:
        import redis

        self.name = name
        self.prefix = prefix
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )

    def fetch(self, keys: Sequence[str]) -> dict[str, Record]:
        import redis

        pipeline = self._client.pipeline(transaction=False)
        for key in keys:
            pipeline.hgetall(self.prefix + key)
        try:
            answers = pipeline.execute()
        except redis.RedisError as exc:
            raise EnrichmentError(self.name, str(exc), type(exc).__name__) from exc
        out: dict[str, Record] = {}
        for key, fields in zip(keys, answers, strict=True):
            if fields:
                out[key] = {name.decode(): _field_value(value) for name, value in fields.items()}
        return out

    def close(self) -> None:
        self._client.close()


def _field_value(raw: bytes) -> Any:
    if raw[:1] in b"[{-0123456789" or raw in (b"true", b"false", b"null"):
        try:
            return _json_decoder.decode(raw)
        except msgspec.DecodeError:
            pass
    return raw.decode()


_json_decoder = msgspec.json.Decoder()


class HttpBatchSource:
    """Records from an HTTP service, many keys per request.

    Contract: ``POST <url>`` with ``{"keys": ["k1", "k2", ...]}`` answers ``200`` with
    ``{"records": {"k1": {...fields...}, ...}}``; keys it does not know are left out. Requests
    carry at most ``max_batch`` keys; up to ``concurrency`` run at once; each has ``timeout_s``.
    """

    def __init__(
        self,
        name: str,
        url: str,
        timeout_s: float = 1.0,
        max_batch: int = 1_000,
        concurrency: int = 4,
    ) -> None:
        import httpx

        self.name = name
        self.url = url
        self.max_batch = max_batch
        self.concurrency = concurrency
        self._client = httpx.Client(
            timeout=timeout_s, limits=httpx.Limits(max_connections=concurrency)
        )
        self._decoder = msgspec.json.Decoder(_HttpAnswer)

    def fetch(self, keys: Sequence[str]) -> dict[str, Any]:
        from concurrent.futures import ThreadPoolExecutor

        chunks = [keys[i : i + self.max_batch] for i in range(0, len(keys), self.max_batch)]
        if len(chunks) == 1:
            return self._fetch_chunk(chunks[0])
        out: dict[str, Any] = {}
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            for records in pool.map(self._fetch_chunk, chunks):
                out.update(records)
        return out

    def _fetch_chunk(self, keys: Sequence[str]) -> dict[str, Any]:
        import httpx

        body = _json_encoder.encode({"keys": list(keys)})
        try:
            response = self._client.post(self.url, content=body)
            response.raise_for_status()
            return self._decoder.decode(response.content).records
        except httpx.HTTPError as exc:
            raise EnrichmentError(self.name, str(exc), type(exc).__name__) from exc
        except UNDECODABLE as exc:
            # The answer as a whole breaks the contract: the service is broken, not one record.
            message = f"the answer breaks the batch contract: {exc}"
            raise EnrichmentError(self.name, message, "InvalidAnswer") from exc

    def close(self) -> None:
        self._client.close()


class _HttpAnswer(msgspec.Struct):
    # Any: one record of the wrong shape is counted by the Materializer, not a failed fetch.
    records: dict[str, Any]


_json_encoder = msgspec.json.Encoder()
