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


def offsets_of(texts: list[bytes], first: int = 0) -> bytes:
    """The int64 offsets of ``texts`` laid end to end from ``first``."""
    offsets = array("q", [first])
    for text in texts:
        offsets.append(offsets[-1] + len(text))
    return offsets.tobytes()


def chunk(texts: list[bytes], first: int = 0) -> tuple[pa.Buffer, pa.Buffer]:
    """A ``large_string`` array's buffers for ``texts``, its offsets starting at ``first``."""
    data = b"#" * first + b"".join(texts)
    return pa.py_buffer(offsets_of(texts, first)), pa.py_buffer(data)


def texts_of(offsets: bytes, data: object) -> list[bytes]:
    bounds = array("q", offsets)
    whole = bytes(memoryview(data))  # type: ignore[arg-type]
    return [whole[a:b] for a, b in itertools.pairwise(bounds)]


def address(data: object) -> int:
    return int(np.frombuffer(data, np.uint8).__array_interface__["data"][0])  # type: ignore[call-overload]


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
            assert texts_of(offsets_of(texts), view) == texts


def test_memory_is_lent_again_only_when_nothing_refers_to_it() -> None:
    chunks = [chunk([b"abc", b"defg", b"hi"])]
    gather = TextGather(1)
    _, first = gather.take(chunks, order_of([1, 0]))
    where = address(first)
    view = pa.py_buffer(first)
    del first
    _, second = gather.take(chunks, order_of([0, 1]))
    assert address(second) != where  # Arrow's buffer still holds the first
    assert view.to_pybytes() == b"defgabc"
    assert bytes(memoryview(second)) == b"abcdefg"
    del view  # the first's last reference: its memory is kept (the second's is then freed)
    del second
    _, third = gather.take(chunks, order_of([2, 1]))
    assert address(third) == where  # let go of, and large enough: lent again
    assert bytes(memoryview(third)) == b"hidefg"


def test_larger_memory_let_go_of_takes_the_place_of_smaller() -> None:
    """A gather keeping one vector keeps the larger of two let go of: with texts growing
    from one row group to the next, the next large group finds its memory."""
    small, large = [chunk([b"x"])], [chunk([b"y" * 100_000])]
    gather, other = TextGather(1), TextGather(1)
    _, tiny = gather.take(small, order_of([0]))
    del tiny  # kept: the only one
    _, big = gather.take(large, order_of([0]))
    where = address(big)
    del big  # kept in place of the small one
    # Another gather's texts of that size, held: memory freed above would be lent to it.
    _, elsewhere = other.take(large, order_of([0]))
    _, again = gather.take(large, order_of([0]))
    assert address(again) == where
    assert bytes(memoryview(again)) == bytes(memoryview(elsewhere)) == b"y" * 100_000


def test_a_bad_order_or_bad_offsets_raise() -> None:
    gather = TextGather(1)
    with pytest.raises(CoreError, match="text index 3 of 3"):
        gather.take([chunk([b"a", b"b", b"c"])], order_of([3]))
    offsets = pa.py_buffer(array("q", [0, 9]).tobytes())
    with pytest.raises(CoreError, match="outside the 3 bytes"):
        gather.take([(offsets, pa.py_buffer(b"abc"))], order_of([0]))


def test_any_buffer_is_read_as_it_is() -> None:
    """Writable buffers (``bytearray``) and unaligned offsets (copied, not borrowed) give the
    same texts."""
    offsets, data = chunk([b"xy", b"z"])
    unaligned = memoryview(b"\0" + offsets.to_pybytes())[1:]
    _, texts = TextGather(1).take(
        [(bytearray(offsets.to_pybytes()), bytearray(data.to_pybytes()))],
        bytearray(array("q", [1, 0]).tobytes()),
    )
    assert bytes(memoryview(texts)) == b"zxy"
    _, texts = TextGather(1).take([(unaligned, data)], order_of([0, 1]))
    assert bytes(memoryview(texts)) == b"xyz"
