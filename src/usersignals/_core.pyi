"""Type stubs of the native extension ``usersignals._core`` (crates/usersignals-py).

Keep in sync with crates/usersignals-py/src/lib.rs: ``tests/unit/test_native_last_n.py`` checks
that every name declared here exists in the built module.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from typing_extensions import Buffer

from usersignals.events.decode import EventPolicy
from usersignals.events.model import Event

_Event = TypeVar("_Event")

# A request's times: (as_of, now, until, window, since), resolved by the core against the
# state read (the view time depends on the state's newest event).
Times = tuple[int | None, int, int | None, int | None, int | None]
# A read the state cannot answer exactly: (view time, earliest as_of it answers, why).
Refusal = tuple[int, int, str]
# A request's filters: (actions, surfaces, exclude, dedupe, limit).
Filters = tuple[
    frozenset[str] | set[str] | None,
    frozenset[str] | set[str] | None,
    frozenset[str] | set[str],
    bool,
    int | None,
]

LAST_N_FORMAT_VERSION: int
LAST_N_JSON_VALUES_VERSION: int
LAST_N_READABLE_VERSIONS: list[int]
DISTINCT_FORMAT_VERSION: int
TILES_FORMAT_VERSION: int
TILES_READABLE_VERSIONS: list[int]
SEEN_FORMAT_VERSION: int
# A Count/Sum entry as the reference holds it: (time or bucket start, group values, value).
TileEntry = tuple[int, tuple[object, ...], int]
DECAYED_SCORES_FORMAT_VERSION: int
MEAN_VECTOR_FORMAT_VERSION: int
# A DecayedScores state: (newest, [(key, bucket, fixed-point sum)], {bucket: newest time}).
ScoresParts = tuple[int, list[tuple[object, int, int]], dict[int, int]]
# A MeanVector state: (newest, {bucket: [sum of scales, sums of scale x component...]}, tops).
VectorParts = tuple[int, dict[int, list[int]], dict[int, int]]

class CoreError(Exception):
    """A plan, batch or state the core refused."""

class CoreStateError(CoreError):
    """A stored state that did not decode; args: (batch user index, plan key, message)."""

def replace_progress(records: list[bytes], progress: list[dict[str, int]]) -> list[bytes]:
    """User records with their progress replaced (states and fingerprints kept); a record
    that does not decode raises ``CoreError`` with args ``(its index, message)``."""

class BatchSession:
    """One micro-batch through the core's pipeline (processing/native_batch.py)."""

    @staticmethod
    def select(
        plans: NativePlans,
        events: list[Any],
        positions: list[Any],
        key_prefix: bytes,
        get_many: Callable[[list[bytes]], Sequence[bytes | None]],
        horizon_hours: int | None,
        rewinds: bool = False,
    ) -> tuple[BatchSession, list[bytes]]: ...
    def live(self, events: list[_Event]) -> list[_Event]:
        """The events to apply, taken from the batch's ``events``, in ``apply``'s order."""
    def dropped(self) -> tuple[int, int, int]:
        """(already applied, repeated event ids, rewound: at or below their user's progress
        but their id never met, so taken: the partition's offsets went backwards)."""
    def foreign_states(self) -> list[tuple[int, int, bytes]]: ...
    def set_migrated(self, user: int, plan: int, state: bytes) -> None: ...
    def apply(
        self,
        columns: Columns,
        declared: set[str],
        expired: set[str],
        names: set[str],
    ) -> tuple[dict[bytes, bytes], tuple[list[int], list[int], int | None]]: ...

class Columns:
    """A batch's live columns as ``ColumnReader.read`` built them; applied once."""

# Where a column's values come from: ("event", [field]), ("attrs", dotted path's parts), or
# ("record", [join index, field]).
Origin = tuple[str, list[str]]

class ColumnReader:
    """Reads the plans' field columns from live events and their joined records."""

    def __init__(
        self,
        columns: Sequence[tuple[str, str, Origin]],
        joins: Sequence[tuple[str, Origin, bool]],
    ) -> None: ...
    def join_keys(self, live: list[Any]) -> tuple[JoinKeys, list[list[str]]] | None:
        """Per join, the keys of ``live``: for ``read`` of the same list, and the distinct
        texts to look up (in order of first appearance, no ``""``); ``None`` when a text
        key field holds something else than a ``str``."""
    def read(
        self,
        live: list[Any],
        records: dict[str, Mapping[str, Any]],
        keys: JoinKeys | None = None,
    ) -> tuple[Columns, list[int]]: ...

class JoinKeys:
    """A batch's lookup keys as ``ColumnReader.join_keys`` read them."""

class NativePlans:
    """The compiled plans of the native signals, parsed once."""

    def __init__(self, plans: Sequence[str]) -> None: ...
    def fields(self) -> list[list[str]]: ...
    def apply(
        self,
        users: int,
        user: Sequence[int],
        ts: Sequence[int],
        event_id: Sequence[str],
        columns: Columns,
        stored: Sequence[Sequence[bytes | None]],
    ) -> tuple[list[list[bytes | None]], list[int], list[int]]: ...
    def read_last_n(
        self,
        plan: int,
        state: bytes,
        times: Times,
        filters: Filters,
    ) -> tuple[list[dict[str, object]], int | None, Refusal | None]: ...
    def read_distinct(
        self, plan: int, state: bytes, times: Times
    ) -> tuple[int, int | None, Refusal | None]: ...
    def decode_distinct(self, plan: int, state: bytes) -> tuple[int, dict[int, bytes]]: ...
    def encode_distinct(self, plan: int, newest: int, buckets: dict[int, bytes]) -> bytes: ...
    def read_grouped(
        self,
        plan: int,
        state: bytes,
        times: Times,
        actions: frozenset[str] | set[str] | None,
        surfaces: frozenset[str] | set[str] | None,
    ) -> tuple[dict[str, object], int | None, Refusal | None]: ...
    def decode_tiles(
        self, plan: int, state: bytes
    ) -> tuple[int, list[TileEntry], list[TileEntry], int]: ...
    def encode_tiles(
        self,
        plan: int,
        newest: int,
        cells: Sequence[tuple[int, tuple[object, ...], int]],
        exact: Sequence[tuple[int, tuple[object, ...], int]],
        exact_from: int,
    ) -> bytes: ...
    def decode_seen(self, plan: int, state: bytes) -> tuple[int, dict[str, int]]: ...
    def encode_seen(self, plan: int, newest: int, times: dict[str, int]) -> bytes: ...
    def decode_last_n(self, plan: int, state: bytes) -> list[tuple[object, ...]]: ...
    def encode_last_n(self, plan: int, entries: Sequence[tuple[object, ...]]) -> bytes: ...
    def read_decayed_scores(
        self,
        plan: int,
        state: bytes,
        times: Times,
        exclude: frozenset[str] | set[str],
        limit: int | None,
    ) -> tuple[list[dict[str, object]], int | None, Refusal | None]: ...
    def read_mean_vector(
        self, plan: int, state: bytes, times: Times
    ) -> tuple[dict[str, object], int | None, Refusal | None]: ...
    def decode_decayed_scores(self, plan: int, state: bytes) -> ScoresParts: ...
    def encode_decayed_scores(self, plan: int, parts: ScoresParts) -> bytes: ...
    def decode_mean_vector(self, plan: int, state: bytes) -> VectorParts: ...
    def encode_mean_vector(self, plan: int, parts: VectorParts) -> bytes: ...

# A training-set column: (plan index, the context's times (as_of and now set per label), its
# filters).
LabelColumn = tuple[int, Times, Filters]
# A labelled user for label_rows: their events (indices, in feeding order), and per label
# group (in time order) how many of those events it includes and its labels' times.
LabelledUser = tuple[Sequence[int], Sequence[tuple[int, Sequence[int]]]]

class PlannedLabels:
    """A shard's plan (``plan_labels``), kept native for ``label_rows``."""

    @property
    def order(self) -> list[int]:
        """The events' indices (into the pairs planned) in feeding order, users one after
        another."""
    @property
    def users(self) -> list[LabelledUser]:
        """Per labelled user: their events (places in ``order``), their label groups (events
        included, the labels' times)."""
    @property
    def label_order(self) -> list[int]:
        """The labels' indices in the order the groups list them."""

def plan_labels(
    pairs: list[tuple[Any, Any]],
    label_user: Sequence[str],
    label_ts: Sequence[int],
    label_row: Sequence[int],
    horizon_hours: int | None,
    archive_prefix: str,
) -> PlannedLabels:
    """A training set's plan: per labelled user (in order of their first label by time, then
    row), their events less the repeats an event-id dedupe of ``horizon_hours`` drops
    (judged in arrival order: archive rows, partitions starting with ``archive_prefix``, in
    one sequence, their files by name, then row), by time, partition and offset; and their
    labels in time order, grouped where no event falls between. The events' fields are read
    from the pairs (``Event``, ``Position``)."""

def label_rows(
    plans: NativePlans,
    planned: PlannedLabels,
    columns: Columns,
    horizon_hours: int | None,
    label_columns_arg: Sequence[LabelColumn],
) -> list[tuple[bytes, TextBuffer]] | None:
    """The training set's loop: each planned user's events applied group by group through
    the pipeline's steps, each label read in between; ``columns``: the field columns of the
    plan's events in its feeding order. Per column, its values as JSON text in an Arrow
    string column's buffers: (labels + 1 native-endian int64 offsets, the texts one after
    another, lent without a copy); None when a label is for the object path to read."""

class TextGather:
    """Gathers text columns into a new order, one column of a row group a call, into the
    memory of the ``TextBuffer`` objects it made before that nothing refers to any more
    (``keep`` of them at most: a row group's columns); freed with the last of it."""

    def __init__(self, keep: int) -> None: ...
    def take(
        self, chunks: Sequence[tuple[Buffer, Buffer]], order: Buffer
    ) -> tuple[bytes, TextBuffer]:
        """A text column's chunks (each a ``large_string`` array's buffers: exactly its
        ``len + 1`` int64 offsets, and its texts) read as one column, gathered in the order
        of ``order`` (an int64 buffer of indices into that column): the new offsets and
        texts, as ``label_rows`` returns a column. Raises ``CoreError`` on an index out of
        range or offsets that do not fit the texts."""

class TextBuffer(Buffer):
    """Read-only bytes lent through the buffer protocol (``memoryview``, ``pyarrow.py_buffer``;
    a C slot, with no ``__buffer__`` attribute before Python 3.12: typed as a ``Buffer`` by
    its base here)."""

    def __len__(self) -> int: ...

class ShareRouter:
    """One shard's split of a local offline job's users: by the stable hash
    (``usersignals.offline.common.shard_of``), except the users ``assigned`` to a shard;
    the ``borrowed`` users' records are needed here too."""

    def __init__(
        self, index: int, shards: int, assigned: dict[str, int], borrowed: set[str] | frozenset[str]
    ) -> None: ...
    def split(self, lines: list[bytes]) -> tuple[list[int], list[int], list[int]]:
        """The indices in ``lines`` of this shard's records, of the borrowed users' records,
        and of the records the core cannot read for sure (routed by
        ``usersignals.offline.share.route``), each ascending."""

def count_users(lines: list[bytes]) -> tuple[dict[str, int], list[int]]:
    """Each user's record count among ``lines``, for the users the core reads for sure, and
    the indices of the records it cannot read for sure (for
    ``usersignals.offline.share.route``), ascending."""

CHECK_UNSURE: str

def check_records(
    records: list[object], expected: Sequence[tuple[str, Sequence[tuple[int, int]]]]
) -> list[tuple[int, str, str]]:
    """The problems of fetched records against their fields' kinds (codes: 0 key, 1 scalar,
    2 number, 3 vector; the dimension): (index, "*", "not_an_object") for a record that is not
    a dict or a PackedFields, (index, field, first reason) for a field that does not fit,
    CHECK_UNSURE where Python's check must decide."""

class EventChecks:
    """``EventPolicy``'s rules for the block path of ``EventDecoder.decode_block``."""

    def __new__(cls, policy: EventPolicy, id_fields: list[str]) -> EventChecks: ...
    def all_pass(self, events: list[Event], now_ms: int) -> bool:
        """Whether ``EventDecoder.check(event, now_ms)`` finds nothing wrong with any of
        ``events`` (False too for what only the reference can judge)."""

def lines_holding(lines: list[bytes], needle: bytes) -> list[int]:
    """The indexes of the ``lines`` that hold ``needle``, in order."""

class BodyQuery:
    """A GET route's query as the core keeps it between requests: per signal (plan index,
    the answer's opening, its closing, the state's key in a user record), the context's
    times (its "now" given per request) and filters."""

    def __init__(
        self, slots: Sequence[tuple[int, bytes, bytes, str]], times: Times, filters: Filters
    ) -> None: ...

def read_record_body(
    plans: NativePlans, query: BodyQuery, user: bytes, record: bytes | None, now_ms: int
) -> bytes | tuple[int, Refusal] | None:
    """A user's answers as the JSON body for a prepared query, from their whole stored
    record (None: the user has none); None also when the record does not decode (the object
    path raises); (slot, refusal) when a slot's state refuses the context."""

#: A record with more fields is not packed (``usersignals.enrich.packed``).
PACKED_MAX_FIELDS: int

class PackedFields:
    """A lookup record's msgpack bytes and the fields the core parsed from them; raises
    CoreError unless the bytes are one msgpack map with text keys that the core reads as
    msgspec does. Used through its subclass ``usersignals.enrich.packed.PackedRecord``:
    ``check_records`` and ``ColumnReader`` ask that mapping for what the core leaves to
    Python."""

    def __new__(cls, data: bytes) -> PackedFields: ...
    @property
    def data(self) -> bytes: ...
    def __len__(self) -> int: ...

_Packed = TypeVar("_Packed", bound=PackedFields)

def packed_records(
    cls: type[_Packed], keys: list[str], values: list[bytes | None]
) -> tuple[dict[str, _Packed], list[int]]:
    """(the values that are packed records, as ``cls`` by key; the indices of the other
    values that are not None, for the caller to decode its own way)."""

class RecordCache:
    """The Materializer's LRU cache of looked-up records, each entry with the time (seconds,
    the caller's clock) it expires at; ``usersignals.enrich.cache.RecordCache`` wraps it."""

    def __init__(self, capacity: int) -> None: ...
    def __len__(self) -> int: ...
    def get_many(
        self, keys: Iterable[str], now: float
    ) -> tuple[dict[str, Any], set[str], list[str]]: ...
    def missing(self, keys: Iterable[str], now: float) -> list[str]: ...
    def put_many(
        self,
        records: Mapping[str, Any],
        absent: Iterable[str],
        expires: float,
        absent_expires: float,
    ) -> None: ...
