"""A GET request's query string resolved once: which signals, with which context.

Most requests repeat a few query strings (the same signals and context for every user), so
the parsing, the name lookups and what each answer's JSON says around its value are done
once per query string and served versions, then reused: only the clock changes from one
request to the next. A cut-over (``registry.serve``) replaces the registry's served mapping,
which every cached query is checked against.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

import msgspec
from starlette.datastructures import QueryParams

from usersignals.aggregations.context import CONTEXT_PARAMETERS, ReadContext
from usersignals.errors import ContextError
from usersignals.serving.guards import distinct_names
from usersignals.serving.inputs import names_of
from usersignals.serving.reader import MAX_QUERIES
from usersignals.signals.definition import Signal
from usersignals.signals.registry import SignalRegistry

_encode = msgspec.json.encode


@dataclass(frozen=True)
class Query:
    """One query string, resolved against the served versions."""

    #: The ``names`` parameter (``None``: every served signal).
    names: list[str] | None
    #: The context, parsed with ``now_ms=0``: :meth:`at` gives it the request's clock.
    context: ReadContext
    #: The parameters as given (what the feature log records).
    params: dict[str, str]
    signals: list[Signal]
    #: Per signal, its answer's JSON up to its value (``"label":{"name":…,"value":``) and
    #: after its freshness (the ignored parameters and ``}``): what ``SignalResult`` encodes.
    heads: list[bytes]
    tails: list[bytes]

    def at(self, now_ms: int) -> ReadContext:
        return dataclasses.replace(self.context, now_ms=now_ms)


def resolve(registry: SignalRegistry, query_string: bytes) -> Query:
    """Parse and check a query string as the GET route always has: an unknown signal name
    (404) before a bad context parameter (400)."""
    try:
        # UTF-8, escaped or not, as the path is read: given bytes, Starlette reads them as
        # Latin-1 (an unescaped `surfaces=首页` became 'é¦\x96é¡µ', a filter matching
        # nothing), and replaces an escaped byte that is not UTF-8 with U+FFFD.
        pairs = parse_qsl(query_string.decode(), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise ContextError("query string", "not UTF-8, escaped or not") from None
    query = QueryParams(pairs)  # as Starlette's request.query_params
    for name in query:
        if len(query.getlist(name)) > 1:  # a dict would keep the last value, silently
            raise ContextError(name, "given more than once")
    params = dict(query)
    for name in params:  # before the context's own check, which does not know `names`
        if name != "names" and name not in CONTEXT_PARAMETERS:
            known = ", ".join(("names", *CONTEXT_PARAMETERS))
            raise ContextError(name, f"unknown parameter; known: {known}")
    given = dict(params)
    names = names_of(params.pop("names", None))
    if names:
        names = distinct_names(names, "names")
    signals = [registry.get(name) for name in names] if names else list(registry)
    context = ReadContext.parse(params, now_ms=0)
    parameters = context.given()
    heads, tails = [], []
    for signal, label in zip(signals, registry.labels(names or None, signals), strict=True):
        heads.append(
            _encode(label)
            + b':{"name":'
            + _encode(signal.name)
            + b',"version":'
            + _encode(signal.version)
            + b',"kind":'
            + _encode(signal.aggregate.kind)
            + b',"value":'
        )
        ignored = sorted(parameters - signal.aggregate.context_parameters())
        tails.append((b',"ignored":' + _encode(ignored) if ignored else b"") + b"}")
    return Query(names, context, given, signals, heads, tails)


class Queries:
    """Resolved queries by query string, for the served versions they were resolved with."""

    def __init__(self, registry: SignalRegistry) -> None:
        self.registry = registry
        self._cache: dict[bytes, tuple[Mapping[str, Signal], Query]] = {}

    def get(self, query_string: bytes) -> Query:
        # Taken before resolving: a cut-over meanwhile leaves an entry that no longer matches.
        served = self.registry.served
        cached = self._cache.get(query_string)
        if cached is not None and cached[0] is served:
            return cached[1]
        query = resolve(self.registry, query_string)
        if len(self._cache) >= MAX_QUERIES:
            self._cache.clear()
        self._cache[query_string] = (served, query)
        return query
