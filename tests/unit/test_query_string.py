"""A query string's text is UTF-8, escaped or not: found in a ranking engineer's trial,
`surfaces=首页` unescaped was read as Latin-1 (a filter matching nothing, silently, where
the same surface percent-encoded matched), and an Arabic-Indic digit in `as_of` was
refused as 'Ù¡'. The path's unescaped UTF-8 (the user id) was read right: the two parts of
a URL disagreed."""

from __future__ import annotations

import pytest

from usersignals import Count, Signal
from usersignals.errors import ContextError
from usersignals.serving.queries import resolve
from usersignals.signals.registry import SignalRegistry

ARABIC_ONE = "\u0661"
REGISTRY = SignalRegistry(
    [Signal(name="counts", version=1, aggregate=Count(by="surface"), retention="7d")]
)


@pytest.mark.parametrize(
    "query",
    ["surfaces=首页".encode(), b"surfaces=%E9%A6%96%E9%A1%B5", "surfaces=首%E9%A1%B5".encode()],
)
def test_unescaped_and_escaped_utf8_read_alike(query: bytes) -> None:
    assert resolve(REGISTRY, query).context.surfaces == frozenset({"首页"})


def test_a_time_in_other_digits_is_refused_in_its_own_words() -> None:
    with pytest.raises(ContextError) as caught:
        resolve(REGISTRY, f"as_of={ARABIC_ONE}".encode())
    assert f"'{ARABIC_ONE}'" in str(caught.value)


@pytest.mark.parametrize("query", [b"surfaces=\xff\xfe", b"surfaces=%FF%FE"])
def test_a_query_string_that_is_not_utf8_is_a_400_naming_it(query: bytes) -> None:
    """Escaped too (a review's find: `%FF%FE` became U+FFFD twice, matching nothing)."""
    with pytest.raises(ContextError) as caught:
        resolve(REGISTRY, query)
    assert caught.value.parameter == "query string"
    assert "UTF-8" in str(caught.value)
