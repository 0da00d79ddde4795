"""``Signal``: one declarative, named, versioned definition of a per-user signal."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from usersignals.aggregations import BUILT_IN_AGGREGATIONS
from usersignals.aggregations.base import Aggregation, AggregationRuntime
from usersignals.aggregations.context import CONTEXT_PARAMETERS
from usersignals.aggregations.rows import Getter
from usersignals.durations import (
    DAY_MS,
    DurationLike,
    coerce_duration,
    duration_problem,
    format_duration,
    to_duration,
)
from usersignals.errors import SignalDefinitionError, UserSignalsError
from usersignals.signals.fields import (
    ATTR_PREFIX,
    BASE_FIELDS,
    Predicate,
    RowPredicate,
    attrs_reader,
)
from usersignals.signals.lookups import Enrichment, Lookup

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_MAX_RETENTION_MS = 3 * 365 * DAY_MS


@dataclass(frozen=True)
class Signal:
    """A per-user signal: which events, which external fields, one aggregation, a retention.

    The ``version`` is part of the state's identity: change what a signal means, bump it, and
    the new version starts from empty state instead of silently mixing two meanings.
    """

    name: str
    version: int
    aggregate: Aggregation
    where: Predicate | None = None
    enrich: Sequence[Enrichment] = ()
    #: How far back events count: ``timedelta(days=90)``, ``"90d"`` or ``days(90)``.
    retention: DurationLike = "90d"
    description: str = ""
    #: Computed live but served only when a request names this version (``names=x@2``):
    #: how a new version runs beside the served one until ``usersignals signals cutover``.
    shadow: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "retention", coerce_duration(self.retention))
        problems = self.problems()
        if problems:
            raise SignalDefinitionError(str(self.name), problems)

    @property
    def key(self) -> str:
        """The identity of the signal's state: ``name@version``."""
        return f"{self.name}@{self.version}"

    @property
    def retention_ms(self) -> int:
        return int(to_duration(self.retention))

    @property
    def lookups(self) -> tuple[Lookup, ...]:
        """The distinct lookup sources this signal needs, in declaration order."""
        seen: dict[str, Lookup] = {}
        for enrichment in self.enrich:
            seen.setdefault(enrichment.lookup.name, enrichment.lookup)
        return tuple(seen.values())

    def problems(self) -> list[str]:
        """Every problem of the definition at once (empty when valid)."""
        problems: list[str] = []
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            problems.append("name must be lowercase letters, digits and _, starting with a letter")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            problems.append("version must be a whole number >= 1")
        aggregate = self.aggregate if isinstance(self.aggregate, Aggregation) else None
        if aggregate is None:
            problems.append("aggregate must be an aggregation such as LastN(...) or Count(...)")
        unreadable = duration_problem("retention", self.retention)
        if unreadable:
            problems.append(unreadable)
        elif not 0 < self.retention_ms <= _MAX_RETENTION_MS:
            problems.append("retention must be a positive duration of at most 3 years")
        if not isinstance(self.shadow, bool):
            problems.append("shadow must be True or False")
        if self.where is not None and not isinstance(self.where, Predicate):
            problems.append("where must be a predicate such as action.isin({...})")
        aggregate_problems = aggregate.problems() if aggregate is not None else []
        if aggregate is not None and not aggregate_problems:
            aggregate_problems = _contract_problems(aggregate)
        if aggregate is not None and not aggregate_problems and not unreadable:
            aggregate_problems = aggregate.retention_problems(self.retention_ms)
        problems += aggregate_problems
        if not isinstance(self.enrich, list | tuple) or not all(
            isinstance(enrichment, Enrichment) for enrichment in self.enrich
        ):
            problems.append(
                "enrich must be a list of lookup fields, such as [items.fields('category')]"
            )
            return problems
        provided: dict[str, str] = {}  # enriched field -> its source
        problems += _enrichment_problems(self.enrich, provided)
        # An aggregation with problems may not name its fields (a `by` that is no name).
        fine = aggregate is not None and not aggregate_problems
        used = set(aggregate.fields()) if fine else set()
        if self.where is not None and isinstance(self.where, Predicate):
            used |= self.where.fields()
        # Names that are not strings are already reported by the aggregation's problems.
        for name in sorted(name for name in used if isinstance(name, str)):
            if name in BASE_FIELDS or name in provided:
                continue
            if name.startswith(ATTR_PREFIX) and len(name) > len(ATTR_PREFIX):
                if "" in name[len(ATTR_PREFIX) :].split("."):
                    problems.append(f"field {name!r}: an attribute path has no empty step")
                continue
            problems.append(
                f"field {name!r} is neither an event field ({', '.join(BASE_FIELDS)}), "
                f"an attribute (attrs.NAME), nor provided by a declared enrichment"
            )
        return problems

    def to_json(self) -> dict[str, Any]:
        """The compiled definition: stable, sorted, diffable JSON-ready data."""
        compiled = self.definition_json()
        if self.shadow:  # only then, so a module of one version per name compiles as before
            compiled["shadow"] = True
        return compiled

    def definition_json(self) -> dict[str, Any]:
        """What the signal computes, without how it is deployed (``shadow``): two versions
        with equal definitions hold equal state."""
        return {
            "name": self.name,
            "version": self.version,
            "key": self.key,
            "description": self.description,
            "where": self.where.to_json() if self.where is not None else None,
            "enrich": [enrichment.to_json() for enrichment in self.enrich],
            "aggregate": self.aggregate.to_json(),
            "context": sorted(self.aggregate.context_parameters()),
            "retention": format_duration(self.retention_ms),
        }

    def meaning_json(self) -> dict[str, Any]:
        """What a version's stored state depends on: :meth:`definition_json` without the
        ``description`` (an edited description changes no state)."""
        meaning = self.definition_json()
        del meaning["description"]
        return meaning

    @cached_property
    def compiled(self) -> CompiledSignal:
        return CompiledSignal(self)


class CompiledSignal:
    """A signal bound to its field accessors: the filter and the aggregation runtime.

    Rows carry one record per *lookup source of this signal*, in ``signal.lookups`` order.
    """

    def __init__(self, signal: Signal) -> None:
        self.signal = signal
        self.key = signal.key
        self._source_of: dict[str, int] = {}
        for position, lookup in enumerate(signal.lookups):
            for enrichment in signal.enrich:
                if enrichment.lookup.name == lookup.name:
                    for name in enrichment.names:
                        self._source_of[name] = position
        self.accepts: RowPredicate | None = (
            signal.where.compile(self.getter) if signal.where is not None else None
        )
        self.runtime: AggregationRuntime[Any] = self._compile_aggregate()

    def _compile_aggregate(self) -> AggregationRuntime[Any]:
        """The aggregation's runtime. A user-defined ``compile()`` that fails is a problem
        of the signal's definition, named as one when the registry is built (``signals
        compile`` included), not a traceback in the first command that runs it."""
        signal = self.signal
        try:
            return signal.aggregate.compile(self.getter, signal.retention_ms)
        except UserSignalsError:
            raise
        except Exception as exc:
            problem = f"{type(signal.aggregate).__name__}.compile() failed: {type(exc).__name__}"
            raise SignalDefinitionError(signal.name, [f"{problem}: {exc}"]) from exc

    def getter(self, name: str) -> Getter:
        """A fast accessor for a field by name (see :mod:`usersignals.signals.fields`)."""
        if name in BASE_FIELDS:
            return _base_getter(name)
        if name.startswith(ATTR_PREFIX):
            read_attrs = attrs_reader(name[len(ATTR_PREFIX) :])
            return lambda row: read_attrs(row[0].attrs)
        position = self._source_of.get(name)
        if position is None:  # the filters' fields are checked when the signal is defined
            aggregation = type(self.signal.aggregate).__name__
            raise SignalDefinitionError(
                self.signal.name,
                [
                    f"{aggregation}.compile() resolves field {name!r}, which is not an event "
                    f"field, an attrs path or an enriched field of the signal: is it in "
                    f"{aggregation}.fields()?"
                ],
            )
        return lambda row: row[1][position].get(name)


def _base_getter(name: str) -> Getter:
    getters: dict[str, Getter] = {
        "event_id": lambda row: row[0].event_id,
        "user_id": lambda row: row[0].user_id,
        "item_id": lambda row: row[0].item_id,
        "action": lambda row: row[0].action,
        "surface": lambda row: row[0].surface,
        "ts": lambda row: row[0].ts,
    }
    return getters[name]


def validate_signals(signals: Sequence[Signal]) -> None:
    """Checks across signals: one definition per ``name@version``, at most one version of a
    name served by default (the others ``shadow=True``), one meaning per lookup source name."""
    problems: list[str] = []
    keys: dict[str, int] = {}
    served: dict[str, set[int]] = {}  # the versions of each name not marked shadow
    for signal in signals:
        keys[signal.key] = keys.get(signal.key, 0) + 1
        if not signal.shadow:
            served.setdefault(signal.name, set()).add(signal.version)
    problems += [
        f"signal {key!r} is defined {n} times: give each definition a name of its own (or a "
        "version of its own, another version of a name marked shadow=True)"
        for key, n in keys.items()
        if n > 1
    ]
    problems += [
        f"signal name {name!r} is served by default {len(versions)} times: mark all versions "
        "but one shadow=True"
        for name, versions in served.items()
        if len(versions) > 1
    ]
    sources: dict[str, Lookup] = {}
    for signal in signals:
        for lookup in signal.lookups:
            known = sources.setdefault(lookup.name, lookup)
            if known.key != lookup.key:
                problems.append(
                    f"lookup source {lookup.name!r} is keyed by both {known.key!r} "
                    f"and {lookup.key!r}"
                )
    if problems:
        raise SignalDefinitionError("", problems)  # of the set, not of one signal


def _enrichment_problems(enrich: Sequence[Enrichment], provided: dict[str, str]) -> list[str]:
    """The enrichments' problems; the fields they provide go into ``provided``."""
    problems = []
    for enrichment in enrich:
        problems += enrichment.problems()
        key = enrichment.lookup.key
        if key not in BASE_FIELDS and not key.startswith(ATTR_PREFIX):
            problems.append(
                f"lookup {enrichment.lookup.name!r} must be keyed by an event field or "
                f"attribute, not {key!r}"
            )
        for name in enrichment.names:
            if name in BASE_FIELDS or name.startswith(ATTR_PREFIX):
                problems.append(f"enriched field {name!r} shadows an event field")
            elif name in provided and provided[name] != enrichment.lookup.name:
                problems.append(f"enriched field {name!r} comes from two sources")
            provided[name] = enrichment.lookup.name
    return problems


#: The built-in aggregations by kind (a subclass of one keeps its kind).
_BUILT_IN_KINDS: dict[str, type[Aggregation]] = {cls.kind: cls for cls in BUILT_IN_AGGREGATIONS}


def _contract_problems(aggregate: Aggregation) -> list[str]:
    """What a user-defined aggregation must declare, checked where its signal is defined
    rather than met as a traceback in a replay or a 500 in a request."""
    problems = []
    name = type(aggregate).__name__
    kind = getattr(aggregate, "kind", None)
    if not isinstance(kind, str) or not kind:
        problems.append(f"{name} must name its kind: a class attribute such as kind = 'my_kind'")
    elif (built_in := _BUILT_IN_KINDS.get(kind)) and not isinstance(aggregate, built_in):
        # Clients and reviewers read an answer's kind as the built-in's meaning.
        problems.append(
            f"{name}'s kind {kind!r} is a built-in aggregation's ({built_in.__name__}): give "
            "it a kind of its own"
        )
    parameters = aggregate.context_parameters()
    if not isinstance(parameters, frozenset | set):
        problems.append(
            f"{name}.context_parameters() must return a frozenset of parameter names, "
            f"not {type(parameters).__name__}"
        )
    elif unknown := sorted(set(parameters) - set(CONTEXT_PARAMETERS), key=str):
        problems.append(
            f"{name}.context_parameters() names unknown parameters {unknown}; "
            f"known: {', '.join(CONTEXT_PARAMETERS)}"
        )
    return (
        problems
        + _fields_problems(name, aggregate.fields())
        + _params_problems(name, aggregate.params())
    )


def _fields_problems(name: str, fields: object) -> list[str]:
    """What is wrong with ``fields()``: a string there was taken for a set of its letters,
    each then reported as an unknown field the author never wrote."""
    if not isinstance(fields, set | frozenset):
        return [f"{name}.fields() must return a set of field names, not {_type(fields)}"]
    wrong = sorted({_type(field) for field in fields if not isinstance(field, str)})
    if wrong:
        holding = ", ".join(wrong)
        return [f"{name}.fields() must return a set of field names, not a set holding {holding}"]
    return []


def _params_problems(name: str, params: object) -> list[str]:
    """What is wrong with ``params()``: it is the version's identity (the compiled JSON and
    the digests ``plan`` and ``serve`` compare), so anything JSON cannot hold exactly would end
    those commands in the encoder, and a ``kind`` of its own would rename the aggregation."""
    if not isinstance(params, dict):
        return [f"{name}.params() must return a dict of JSON-ready values, not {_type(params)}"]
    problems = []
    if "kind" in params:
        problems.append(f"{name}.params() must not hold 'kind': the class's kind names it")
    wrong = _not_json(params)
    if wrong:
        problems.append(f"{name}.params() {wrong}")
    return problems


def _not_json(value: object) -> str | None:
    """Why ``value`` is not JSON-ready (str-keyed dicts, lists, strings, finite numbers, bools
    and None), or None when it is."""
    if isinstance(value, float) and not math.isfinite(value):
        return "holds a value not JSON-ready (a NaN or infinite number)"
    if value is None or isinstance(value, str | bool | int | float):
        return None
    if isinstance(value, list | tuple):
        return next((wrong for item in value if (wrong := _not_json(item))), None)
    if isinstance(value, dict):
        keys = [key for key in value if not isinstance(key, str)]
        if keys:
            return f"keys must be strings, not {keys!r}"
        return next((wrong for item in value.values() if (wrong := _not_json(item))), None)
    return f"holds a value not JSON-ready ({_type(value)}): write it as text or numbers"


def _type(value: object) -> str:
    return type(value).__name__
