"""The labels' user ids as the API reads them: found in a new-user trial.

A binary user id column (common in Hive and Spark exports) was read with ``str()``, so
``b"u001"`` became the user ``"b'u001'"``, and a float column's ``1.0`` the user ``"1.0"``:
labels of no one, answered as users with no events, without a word. Ids the API refuses
(empty, longer than ``events.max_user_id_chars``) got empty features, where the API answers
them with a 400; they are now rows without a user, counted in the job's warning.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from usersignals.errors import ConfigurationError, ContextError
from usersignals.offline.training import feature_columns, read_labels
from usersignals.signals.registry import SignalRegistry

T = 1_767_225_600_000


def labels_file(tmp_path: Path, users: pa.Array) -> Path:
    path = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"user_id": users, "ts": pa.array([T] * len(users))}), path)
    return path


def test_utf8_bytes_are_the_user_they_spell(tmp_path: Path) -> None:
    path = labels_file(tmp_path, pa.array([b"u001", None, "é".encode()], pa.binary()))
    _, labels = read_labels(path, "user_id", "ts")
    assert [(row, user) for row, user, _ in labels] == [(0, "u001"), (2, "é")]


def test_integers_are_their_digits(tmp_path: Path) -> None:
    _, labels = read_labels(labels_file(tmp_path, pa.array([7, 12])), "user_id", "ts")
    assert [user for _, user, _ in labels] == ["7", "12"]


@pytest.mark.parametrize(
    ("users", "named"),
    [
        (pa.array([1.0, 2.0]), "double"),
        (pa.array([b"\xff"], pa.binary()), "UTF-8"),
        (pa.array([True]), "bool"),
    ],
)
def test_other_user_ids_are_refused_naming_the_column(
    tmp_path: Path, users: pa.Array, named: str
) -> None:
    with pytest.raises(ConfigurationError, match=f"user_id.*{named}"):
        read_labels(labels_file(tmp_path, users), "user_id", "ts")


def test_ids_the_api_refuses_are_rows_without_a_user(tmp_path: Path) -> None:
    path = labels_file(tmp_path, pa.array(["", "u1", "x" * 129, "y" * 128]))
    _, labels = read_labels(path, "user_id", "ts", max_user_id_chars=128)
    assert [row for row, _, _ in labels] == [1, 3]


def test_an_unknown_context_parameter_lists_those_a_training_set_takes() -> None:
    """Found in a new-user trial: ``--context foo=1`` listed ``as_of`` among the known
    parameters, which ``--context`` refuses (each label's time is its ``as_of``)."""
    registry = SignalRegistry.from_module("usersignals.examples.reference")
    with pytest.raises(ContextError, match="known: window") as refused:
        feature_columns(registry, ["foo=1"])
    assert "as_of" not in str(refused.value)


def test_the_columns_pandas_writes_are_read(tmp_path: Path) -> None:
    """Found in an ML engineer's trial: a pandas `category` user column (Arrow dictionary)
    was refused, and so was a ms column with a missing value (pandas makes it float64), so
    the documented "a row without a time gets nulls" could not be reached that way."""
    users = pa.array(["u1", "u2", "u1", None]).dictionary_encode()
    times = pa.array([float(T), None, float(T + 1), float(T)], pa.float64())
    path = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"user_id": users, "ts": times}), path)
    _, labels = read_labels(path, "user_id", "ts")
    assert labels == [(0, "u1", T), (2, "u1", T + 1)]
    pq.write_table(pa.table({"user_id": ["u1"], "ts": pa.array([T + 0.5])}), path)
    with pytest.raises(ConfigurationError, match="whole milliseconds"):
        read_labels(path, "user_id", "ts")
