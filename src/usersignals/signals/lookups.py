"""Declarations of external data joined onto events (the Materializer fills them).

A :class:`Lookup` names a source, the event field that keys it and the fields it provides;
``lookup.fields("category")`` is what a signal lists in ``enrich=[...]``. Every signal that
needs fields of one source shares that source's one batched lookup per micro-batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from usersignals.field_names import FieldNames, coerce_names, names_problem


@dataclass(frozen=True)
class Lookup:
    """An external data source: ``Lookup("items", key="item_id", provides=("category",))``."""

    name: str
    key: str
    provides: tuple[str, ...]

    if TYPE_CHECKING:  # `provides` takes one name as a string too (coerced below)

        def __init__(self, name: str, key: str, provides: FieldNames) -> None: ...

    def __post_init__(self) -> None:
        object.__setattr__(self, "provides", coerce_names(self.provides))

    def fields(self, *names: str) -> Enrichment:
        return Enrichment(self, tuple(names))

    def to_json(self) -> dict[str, Any]:
        return {"source": self.name, "key": self.key, "provides": list(self.provides)}


@dataclass(frozen=True)
class Enrichment:
    """The fields of one :class:`Lookup` that one signal needs."""

    lookup: Lookup
    names: tuple[str, ...]

    def problems(self) -> list[str]:
        unreadable = names_problem(f"lookup {self.lookup.name!r} provides", self.lookup.provides)
        if unreadable:
            return [unreadable]
        unknown = [name for name in self.names if name not in self.lookup.provides]
        if not self.names:
            return [f"enrichment from {self.lookup.name!r} lists no fields"]
        if unknown:
            return [
                f"source {self.lookup.name!r} does not provide {', '.join(unknown)} "
                f"(it provides {', '.join(self.lookup.provides)})"
            ]
        return []

    def to_json(self) -> dict[str, Any]:
        return {"source": self.lookup.name, "key": self.lookup.key, "fields": list(self.names)}
