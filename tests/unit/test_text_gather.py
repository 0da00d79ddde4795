"""The core's gathering of text columns into row order (``TextGather``, used by the training
set's file writer): the texts the order asks for, in memory it lends again only once nothing
refers to it any more."""

from __future__ import annotations

import itertools
from array import array

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usersignals._core import CoreError, TextGather
from usersignals.offline.features_file import _RowCursor, value_batch


def chunk(texts: list[bytes], first: int = 0) -> tuple[pa.Buffer, pa.Buffer]:
    """A ``large_string`` array's buffers for ``texts``, its offsets starting at ``first``."""
    offsets = array("q", [first])
    for text in texts:
        offsets.append(offsets[-1] + len(text))
    return pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"#" * first + b"".join(texts))


def texts_of(offsets: bytes, data: object) -> list[bytes]:
    bounds = array("q", offsets)
    whole = bytes(memoryview(data))  # type: ignore[arg-type]
    return [whole[a:b] for a, b in itertools.pairwise(bounds)]


def address(data: object) -> int:
    return int(np.frombuffer(data, np.uint8).__array_interface__["data"][0])  # type: ignore[call-overload]


def offsets_for(texts: list[bytes]) -> bytes:
    offsets = array("q", [0])
    for text in texts:
        offsets.append(offsets[-1] + len(text))
    return offsets.tobytes()


def order_of(indices: list[int]) -> memoryview:
    return memoryview(array("q", indices))


@settings(max_examples=60, deadline=None)
@given(
    columns=st.lists(
        st.tuples(st.lists(st.binary(max_size=20), max_size=8), st.integers(0, 3)),
        min_size=1,
        max_size=3,
    ),
    rounds=st.lists(
        st.tuples(st.lists(st.integers(0, 10**6), max_size=12), st.booleans()), max_size=6
    ),
)
def test_each_take_gives_the_texts_asked_for_and_leaves_held_ones_as_they_were(
    columns: list[tuple[list[bytes], int]], rounds: list[tuple[list[int], bool]]
) -> None:
    """Any number of takes, each result kept or let go of at random: every take holds the
    picked texts in the order asked, and every result still held is as it was taken, however
    often the memory let go of was lent again."""
    chunks = [chunk(texts, first) for texts, first in columns]
    column = [text for texts, _ in columns for text in texts]
    gather = TextGather(2)
    held: list[tuple[object, list[bytes]]] = []
    for picks, keep in rounds:
        indices = [pick % len(column) for pick in picks] if column else []
        offsets, data = gather.take(chunks, order_of(indices))
        expected = [column[i] for i in indices]
        assert texts_of(offsets, data) == expected
        if keep:
            held.append((pa.py_buffer(data), expected))  # only Arrow's view keeps it
        del data
        for view, texts in held:
            assert texts_of(offsets_for(texts), view) == texts


def test_memory_is_lent_again_only_when_nothing_refers_to_it() -> None:
    chunks = [chunk([b"abc", b"defg", b"hi"])]
    gather = TextGather(1)
    _, first = gather.take(chunks, order_of([1, 0]))
    where = address(first)
    view = pa.py_buffer(first)
    del first
    _, second = gather.take(chunks, order_of([1, 0]))
    assert address(second) != where  # Arrow's buffer still holds the first
    assert view.to_pybytes() == b"defgabc"
    del view, second
    _, third = gather.take(chunks, order_of([2, 1]))
    assert bytes(memoryview(third)) == b"hidefg"
    again = address(third)
    del third
    _, fourth = gather.take(chunks, order_of([0]))
    assert address(fourth) == again  # let go of, and large enough: lent again
    assert bytes(memoryview(fourth)) == b"abc"


def test_a_bad_order_or_bad_offsets_raise() -> None:
    gather = TextGather(1)
    with pytest.raises(CoreError, match="text index 3 of 3"):
        gather.take([chunk([b"a", b"b", b"c"])], order_of([3]))
    offsets = pa.py_buffer(array("q", [0, 9]).tobytes())
    with pytest.raises(CoreError, match="outside the 3 bytes"):
        gather.take([(offsets, pa.py_buffer(b"abc"))], order_of([0]))


def test_a_writable_buffer_is_read_as_it_is() -> None:
    """Buffers Python may write to (``bytearray``) are read with the GIL held: the same
    answer."""
    offsets, data = chunk([b"xy", b"z"])
    _, texts = TextGather(1).take(
        [(bytearray(offsets.to_pybytes()), bytearray(data.to_pybytes()))],
        bytearray(array("q", [1, 0]).tobytes()),
    )
    assert bytes(memoryview(texts)) == b"zxy"


def test_a_row_group_is_assembled_without_reading_the_next_batch() -> None:
    """A group whose rows end where a batch does takes nothing more from the stream: the next
    batch is gathered only when the group after needs it (so it can reuse the memory of the
    group written before it)."""
    rows = list(range(6))
    batches = [value_batch([(row, [str(row).encode()]) for row in rows[:3]], 1),
               value_batch([(row, [str(row).encode()]) for row in rows[3:]], 1)]  # fmt: skip
    pulled: list[int] = []

    def stream():  # type: ignore[no-untyped-def]
        for index, batch in enumerate(batches):
            pulled.append(index)
            yield batch

    cursor = _RowCursor(stream())
    first = cursor.aligned(0, 3, 1)
    assert pulled == [0]
    assert first[0].to_pylist() == ["0", "1", "2"]
    assert cursor.aligned(3, 3, 1)[0].to_pylist() == ["3", "4", "5"]
    assert pulled == [0, 1]
