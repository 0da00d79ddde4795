"""Packed records (``usersignals.enrich.packed``): an embedded table's rows kept as msgpack
and read by the core. msgspec's decoding of the same bytes is the reference, for the mapping
Python code sees, for the Materializer's record checks, and for what the engine computes
from the records (native pipeline and Python steps alike)."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.native_batching import batches, native_states, users_of
from tests.unit.test_native_pipeline import SIGNALS, run, stream

from usersignals import Engine, SignalRegistry
from usersignals._core import PACKED_MAX_FIELDS, CoreError, packed_records
from usersignals.enrich import Materializer, TableSource
from usersignals.enrich.packed import PackedRecord, packed_record
from usersignals.enrich.sources import encode_table_record
from usersignals.state.memory import MemoryStore
from usersignals.values import KEY, NUMBER, SCALAR, FieldKind, vector

decoder = msgspec.msgpack.Decoder(dict[str, Any])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),  # msgpack's whole integer range
    st.floats(),
    st.text(max_size=4),
    st.binary(max_size=3),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=3), st.integers(-5, 5)), inner, max_size=3),
    ),
    max_leaves=8,
)
records = st.dictionaries(st.text(max_size=3), values, max_size=5)


def same(a: object, b: object) -> bool:
    """Equal, with NaN equal to itself (msgspec round-trips it)."""
    return msgspec.msgpack.encode(a) == msgspec.msgpack.encode(b)


@settings(max_examples=300, deadline=None)
@given(record=records)
def test_a_packed_record_reads_as_msgspec_decodes_it(record: dict[str, Any]) -> None:
    data = msgspec.msgpack.encode(record)
    packed = packed_record(data)
    assert packed is not None
    assert isinstance(packed, PackedRecord)
    reference = decoder.decode(data)
    assert len(packed) == len(reference)
    assert list(packed) == list(reference)
    assert same(dict(packed.items()), reference)
    assert packed.data == data
    assert same(dict(pickle.loads(pickle.dumps(packed))), reference)


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(st.binary(max_size=24), records.map(msgspec.msgpack.encode)))
def test_bytes_are_packed_only_where_msgspec_reads_them_as_a_record(data: bytes) -> None:
    """Anything the core refuses is decoded by msgspec instead (or found not a record):
    whatever it packs, msgspec reads as the same record."""
    mutated = [data, data[:-1], data + b"\xc0", b"\x81\xa1a" + data]
    for candidate in mutated:
        packed = packed_record(candidate)
        if packed is not None:
            assert same(dict(packed), decoder.decode(candidate))


def test_what_the_core_leaves_to_python_is_refused() -> None:
    ext = msgspec.msgpack.encode({"t": msgspec.msgpack.Ext(1, b"x")})
    for data in [b"", b"\xc0", msgspec.msgpack.encode([1]), msgspec.msgpack.encode({1: 2}), ext]:
        assert packed_record(data) is None, data


def test_a_record_with_many_fields_is_left_to_msgspec() -> None:
    """Past a few dozen fields the core's scan by name stops paying: msgspec decodes it."""
    wide = msgspec.msgpack.encode({f"f{n}": n for n in range(PACKED_MAX_FIELDS + 1)})
    assert packed_record(wide) is None
    narrow = msgspec.msgpack.encode({f"f{n}": n for n in range(PACKED_MAX_FIELDS)})
    assert packed_record(narrow) is not None
    table = MemoryStore().table("items")
    table.write({b"wide": wide})
    assert TableSource("items", table).fetch(["wide"]) == {"wide": decoder.decode(wide)}


def test_bytes_msgspec_cannot_decode_are_not_a_record() -> None:
    """A text of invalid UTF-8 (msgspec raises UnicodeDecodeError, not DecodeError): the
    value is passed on as it is, and the Materializer counts the key as absent."""
    bad = b"\x81\xa1a\xa3\xed\xa0\x80"
    table = MemoryStore().table("items")
    table.write({b"bad": bad})
    materializer = Materializer({"items": TableSource("items", table)})
    assert materializer.lookup("items", ["bad"]) == {}
    assert materializer.stats.bad_fields == {("items", "*", "not_an_object"): 1}


def test_a_buffer_other_than_bytes_is_decoded_by_msgspec() -> None:
    data = msgspec.msgpack.encode({"a": 1})
    assert packed_record(bytearray(data)) is None
    assert packed_record(memoryview(data)) is None


def reference_record(value: bytes) -> Any:
    """What a table's value is to the Materializer, one value at a time (the reference
    for ``TableSource.fetch``, which does a batch in one core call)."""
    packed = packed_record(value)
    if packed is not None:
        return packed
    try:
        return decoder.decode(value)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return value


@settings(max_examples=200, deadline=None)
@given(
    stored=st.lists(
        st.one_of(
            records.map(msgspec.msgpack.encode),
            st.binary(max_size=12),
            st.just(b""),
            records.map(lambda r: msgspec.msgpack.encode(r) + b"\xc0"),
        ),
        max_size=12,
    ),
    asked=st.lists(st.integers(0, 15), max_size=16),
)
def test_a_table_source_fetches_each_value_as_the_one_value_reference_reads_it(
    stored: list[bytes], asked: list[int]
) -> None:
    """Packed where the core reads the bytes as msgspec does, else decoded by msgspec, else
    the bytes themselves (not a record); an empty value or an absent key is left out."""
    table = MemoryStore().table("items")
    table.write({f"k{n}".encode(): value for n, value in enumerate(stored)})
    keys = list(dict.fromkeys(f"k{n}" for n in asked))
    fetched = TableSource("items", table).fetch(keys)
    expected = {
        key: reference_record(stored[n])
        for key in keys
        if (n := int(key[1:])) < len(stored) and stored[n]
    }
    assert fetched.keys() == expected.keys()  # a mapping: fetched in key order, not asked
    for key, record in fetched.items():
        assert type(record) is type(expected[key])
        if isinstance(record, PackedRecord):
            assert record.data == expected[key].data
        else:
            assert same(record, expected[key])


def test_packed_records_refuses_keys_and_values_of_different_lengths() -> None:
    with pytest.raises(CoreError, match="2 keys for 1 values"):
        packed_records(PackedRecord, ["a", "b"], [None])


class DictSource:
    """The same table, decoded by msgspec: the reference for a packed table source."""

    def __init__(self, rows: dict[bytes, bytes]) -> None:
        self.name = "items"
        self.rows = rows

    def fetch(self, keys: Sequence[str]) -> dict[str, Any]:
        return {k: decoder.decode(self.rows[k.encode()]) for k in keys if k.encode() in self.rows}


TRICKY = [
    "c1", 3, -7, 2.5, 1e300, float("nan"), None, True, [1, 2], [0.5, 1.0], [True, 0.5],
    [0.5, "x"], [2**64 - 1, 0.0], [[1.0], 2.0], [0.5], {"a": 1}, 2**63 + 5, b"x", "",
]  # fmt: skip
KINDS = [KEY, SCALAR, NUMBER, vector(2)]


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(
        st.dictionaries(
            st.sampled_from(["category", "creator", "embedding", "other"]),
            st.sampled_from(TRICKY),
            max_size=4,
        ),
        min_size=1,
        max_size=6,
    ),
    expected=st.dictionaries(
        st.sampled_from(["category", "creator", "embedding"]),
        st.lists(st.sampled_from(KINDS), min_size=1, max_size=2),
    ),
)
def test_the_record_checks_of_a_packed_record_are_those_of_its_dict(
    rows: list[dict[str, Any]], expected: dict[str, list[FieldKind]]
) -> None:
    table = {f"i{n}".encode(): encode_table_record(row) for n, row in enumerate(rows)}
    checked = []
    for source in [TableSource("items", MemoryStore().table("items")), DictSource(table)]:
        if isinstance(source, TableSource):
            source._table.write(table)
        materializer = Materializer({"items": source})
        materializer.expect("items", expected)
        found = materializer.lookup("items", [key.decode() for key in table])
        checked.append(({k: dict(v) for k, v in found.items()}, materializer.stats.bad_fields))
    assert same(checked[0], checked[1])


#: Per item of the pipeline test but its last (which has no record): category, creator and
#: embedding, each any of the awkward values.
item_fields = st.lists(
    st.tuples(st.sampled_from(TRICKY), st.sampled_from(TRICKY), st.sampled_from(TRICKY)),
    min_size=7,
    max_size=7,
)
#: A stream of the pipeline test (``stream(seed, size)``) cut into batches, and its items.
STREAM_CASES = {
    "seed": st.integers(0, 10_000),
    "size": st.integers(1, 80),
    "cuts": st.lists(st.integers(1, 100), max_size=4),
    "fields": item_fields,
}


def open_engine(source: TableSource | DictSource, native: bool) -> Engine:
    return Engine(
        SignalRegistry(SIGNALS),
        MemoryStore(),
        Materializer({"items": source}),
        native_pipeline=native,
    )


@settings(max_examples=60, deadline=None)
@given(**STREAM_CASES)
def test_the_engine_computes_from_packed_records_what_it_computes_from_dicts(
    seed: int, size: int, cuts: list[int], fields: list[tuple[Any, Any, Any]]
) -> None:
    """Every signal of the pipeline test, fed items whose fields take awkward values: the
    native pipeline reading packed records writes the bytes it writes from decoded dicts,
    and so does the per-user Python path reading them as mappings."""
    rows = {
        f"i{n}".encode(): encode_table_record(
            {"item_id": f"i{n}", "category": category, "creator": creator, "embedding": vector_}
        )
        for n, (category, creator, vector_) in enumerate(fields)  # i7 has no record
    }
    packed = TableSource("items", MemoryStore().table("items"))
    packed._table.write(rows)
    pairs = stream(seed, size)
    engines = [
        open_engine(DictSource(rows), native=True),
        open_engine(packed, native=True),
        open_engine(packed, native=False),
    ]
    reports = [run(engine, pairs, cuts) for engine in engines]
    stored = [dict(engine.store.scan(b"u:")) for engine in engines]
    assert reports[0] == reports[1] == reports[2]
    assert stored[0] == stored[1] == stored[2]


@settings(max_examples=60, deadline=None)
@given(**STREAM_CASES)
def test_the_columns_read_from_packed_records_are_those_read_from_dicts(
    seed: int, size: int, cuts: list[int], fields: list[tuple[Any, Any, Any]]
) -> None:
    """The column reader alone, without the Materializer's checks in front (which remove
    most awkward values): each signal's states from packed records and from their dicts."""
    dicts = {
        f"i{n}": {"category": category, "creator": creator, "embedding": vector_}
        for n, (category, creator, vector_) in enumerate(fields)
    }
    packed = {key: packed_record(msgspec.msgpack.encode(row)) for key, row in dicts.items()}
    parts = batches([event for event, _ in stream(seed, size)], cuts)
    users = users_of(parts)
    for signal in SIGNALS:
        expected = native_states(signal, parts, users, dicts)
        assert native_states(signal, parts, users, packed) == expected, signal.key


@pytest.mark.parametrize("value", TRICKY, ids=repr)
def test_a_packed_field_reads_as_its_python_value(value: Any) -> None:
    packed = packed_record(msgspec.msgpack.encode({"f": value}))
    assert packed is not None
    assert same(packed["f"], value)
    assert packed.get("absent") is None
