"""A looked-up record kept as the msgpack bytes its table stored.

An embedded table (:class:`~usersignals.enrich.sources.TableSource`) hands the Materializer
its rows this way rather than decoded into dicts: the core parses the fields once, the
engine's columns and the record checks read them without a Python object per field, and the
Materializer's cache holds one small object per record. An item with a 32-float embedding
decoded into 36 Python objects, about 3 µs to build and 0.5 µs to free, for every record a
batch fetched.

To Python code a packed record is a read-only mapping with the dict that msgspec decodes
from the same bytes (decoded on first use): msgspec's decoding is the reference, and the
core leaves any value it does not model (a nested map, a list of anything but numbers,
bytes, an integer past 64 bits) to it. Once read from Python (a signal on the per-user
Python path, say), a record keeps that dict beside its bytes for as long as the
Materializer's cache holds it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

from usersignals._core import CoreError, PackedFields

_decoder = msgspec.msgpack.Decoder(dict[str, Any])


class PackedRecord(PackedFields, Mapping[str, Any]):
    """``PackedRecord(data)``; see :func:`packed_record`."""

    __slots__ = ("_decoded",)

    def _fields(self) -> dict[str, Any]:
        try:
            return self._decoded
        except AttributeError:
            self._decoded: dict[str, Any] = _decoder.decode(self.data)
            return self._decoded

    def __getitem__(self, name: str) -> Any:
        return self._fields()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields())

    # ``__len__`` is PackedFields' (the parse's field count): first in the MRO.

    def __repr__(self) -> str:
        return f"PackedRecord({self._fields()!r})"

    def __reduce__(self) -> tuple[type[PackedRecord], tuple[bytes]]:
        return (PackedRecord, (self.data,))


def packed_record(data: bytes) -> PackedRecord | None:
    """One value's form of ``usersignals._core.packed_records`` (which a table source calls
    once per fetch; the tests hold it to this one).

    ``data`` as a packed record; ``None`` unless it is ``bytes`` holding one msgpack map
    with text keys that the core reads exactly as msgspec does, of at most
    ``usersignals._core.PACKED_MAX_FIELDS`` fields (the core finds a field by a scan of the
    names). Then decode it with msgspec, which takes any buffer."""
    if not isinstance(data, bytes):
        return None
    try:
        return PackedRecord(data)
    except CoreError:
        return None
