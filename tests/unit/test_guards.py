"""Work caps of one request (issue 9, item 9)."""

from __future__ import annotations

import pytest

from usersignals.errors import ContextError
from usersignals.serving.guards import (
    MAX_NAMES_PER_REQUEST,
    MAX_READS_PER_REQUEST,
    check_reads,
    distinct_names,
)


def test_repeated_names_are_read_once_and_too_many_are_refused() -> None:
    assert distinct_names(["a", "b", "a", "a"], "names") == ["a", "b"]
    with pytest.raises(ContextError) as refused:
        distinct_names(["a"] * (MAX_NAMES_PER_REQUEST + 1), "signals")
    assert refused.value.parameter == "signals"


def test_users_times_signals_is_capped() -> None:
    check_reads(1_000, MAX_READS_PER_REQUEST // 1_000)
    with pytest.raises(ContextError) as refused:
        check_reads(1_000, MAX_READS_PER_REQUEST // 1_000 + 1)
    assert refused.value.parameter == "users"
    assert "split the request" in str(refused.value)
