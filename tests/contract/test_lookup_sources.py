"""The lookup-source contract: every source the Materializer can use passes this suite.

Sources: the embedded table (RocksDB), Redis hashes (a real redis-server on loopback) and the
HTTP batch lookup (a real HTTP server on loopback speaking the documented contract).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from usersignals.devtools.lookup_server import serve
from usersignals.enrich.sources import (
    HttpBatchSource,
    RedisHashSource,
    TableSource,
    encode_table_record,
)
from usersignals.state import RocksStore

RECORDS: dict[str, dict[str, Any]] = {
    f"i{n:05d}": {
        "item_id": f"i{n:05d}",
        "category": f"c{n % 7}",
        "creator_id": f"cr{n % 11}",
        "embedding": [round((n % 5) / 4 - 0.5, 4), 0.25, -1.0],
        "price": n * 10,
    }
    for n in range(2_500)
}


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    server = serve(RECORDS)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/lookup"
    server.shutdown()
    server.server_close()


@pytest.fixture(params=["table", "redis", "http"])
def source(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "table":
        store = RocksStore(tmp_path / "store")
        table = store.table("items")
        table.write({k.encode(): encode_table_record(v) for k, v in RECORDS.items()})
        yield TableSource("items", table)
        store.close()
    elif request.param == "redis":
        url = request.getfixturevalue("redis_url")
        prefix = f"items-{uuid.uuid4().hex[:8]}:"
        client = redis.Redis.from_url(url)
        pipeline = client.pipeline()
        for key, record in RECORDS.items():
            fields = {
                name: value if isinstance(value, str) else json.dumps(value)
                for name, value in record.items()
            }
            pipeline.hset(prefix + key, mapping=fields)
        pipeline.execute()
        client.close()
        redis_source = RedisHashSource("items", url, prefix=prefix)
        yield redis_source
        redis_source.close()
    else:
        http_source = HttpBatchSource(
            "items", request.getfixturevalue("http_url"), max_batch=1_000, concurrency=3
        )
        yield http_source
        http_source.close()


def test_present_keys_come_back_with_their_fields_and_types(source: Any) -> None:
    got = source.fetch(["i00001", "i00042"])
    assert got == {"i00001": RECORDS["i00001"], "i00042": RECORDS["i00042"]}
    assert isinstance(got["i00042"]["price"], int)
    assert all(isinstance(x, float) for x in got["i00042"]["embedding"])


def test_absent_keys_are_left_out(source: Any) -> None:
    assert source.fetch(["nope", "i00003", "also-nope"]) == {"i00003": RECORDS["i00003"]}
    assert source.fetch(["nope"]) == {}


def test_large_batches_return_every_record(source: Any) -> None:
    keys = list(RECORDS)
    got = source.fetch(keys)
    assert len(got) == len(RECORDS)
    assert got == RECORDS
