"""The Generic Materializer: one batched, de-duplicated lookup per source per micro-batch.

Signals never fetch data. The engine hands the Materializer, per source, the keys that the
micro-batch's interested events carry; each distinct key is fetched once, however many events
and signals need it, and the records come back for the engine to join onto rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from usersignals.enrich.cache import RecordCache
from usersignals.enrich.sources import LookupSource, Record
from usersignals.errors import ConfigurationError, EnrichmentError

logger = logging.getLogger(__name__)


@dataclass
class MaterializerStats:
    keys_requested: int = 0
    cache_hits: int = 0
    keys_fetched: int = 0
    keys_missing: int = 0
    fetch_calls: int = 0
    by_source: dict[str, int] = field(default_factory=dict)


class Materializer:
    def __init__(
        self,
        sources: Mapping[str, LookupSource],
        cache_factory: Callable[[], RecordCache] = RecordCache,
    ) -> None:
        self._sources = dict(sources)
        # A cache per source: two sources may use the same keys for different records.
        self._caches = {name: cache_factory() for name in self._sources}
        self.stats = MaterializerStats()

    def require(self, names: Iterable[str]) -> None:
        """Fail early, at start-up, when a signal needs a source nobody configured."""
        missing = sorted(set(names) - set(self._sources))
        if missing:
            raise ConfigurationError(
                f"no lookup source configured for {', '.join(missing)}; load a table with "
                "`usersignals tables load NAME FILE` or configure a source"
            )

    def lookup(self, source: str, keys: Iterable[str]) -> dict[str, Record]:
        """Records for the distinct ``keys`` of one source; absent keys are left out."""
        unique = list(dict.fromkeys(keys))
        stats = self.stats
        stats.keys_requested += len(unique)
        if not unique:
            return {}
        try:
            cache, fetcher = self._caches[source], self._sources[source]
        except KeyError:
            raise ConfigurationError(f"no lookup source named {source!r}") from None
        records, _, fetch = cache.get_many(unique)
        stats.cache_hits += len(unique) - len(fetch)
        if fetch:
            try:
                fetched = dict(fetcher.fetch(fetch))
            except Exception as exc:
                raise EnrichmentError(source, str(exc)) from exc
            cache.put_many(fetched, [key for key in fetch if key not in fetched])
            records.update(fetched)
            stats.fetch_calls += 1
            stats.keys_fetched += len(fetch)
            stats.keys_missing += len(fetch) - len(fetched)
        stats.by_source[source] = stats.by_source.get(source, 0) + len(unique)
        return records
