"""The composition root: builds every part from one :class:`Settings`, and nothing else."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from usersignals.config import Settings
from usersignals.enrich.materializer import Materializer
from usersignals.enrich.sources import TableSource
from usersignals.events.decode import EventDecoder, EventPolicy
from usersignals.processing.engine import Engine
from usersignals.serving.reader import SignalReader
from usersignals.signals.registry import SignalRegistry
from usersignals.state.keys import meta_key
from usersignals.state.rocks import RocksStore

_SIGNALS_MODULE_KEY = meta_key("signals_module")


@dataclass
class Processor:
    """What a writer process holds: the store, the engine and the event decoder."""

    settings: Settings
    store: RocksStore
    registry: SignalRegistry
    engine: Engine
    decoder: EventDecoder

    def close(self) -> None:
        self.store.close()


def build_registry(settings: Settings) -> SignalRegistry:
    return SignalRegistry.from_module(settings.signals)


def build_decoder(settings: Settings) -> EventDecoder:
    events = settings.events
    return EventDecoder(
        EventPolicy(
            allowed_actions=frozenset(events.allowed_actions) or None,
            max_event_bytes=events.max_event_bytes,
            max_future_ms=events.max_future_ms,
        )
    )


def build_processor(settings: Settings) -> Processor:
    registry = build_registry(settings)
    store = RocksStore(Path(settings.store.path), sync=settings.store.sync)
    try:
        sources = {
            lookup.name: TableSource(lookup.name, store.table(lookup.name))
            for signal in registry
            for lookup in signal.lookups
        }
        engine = Engine(registry, store, Materializer(sources))
        # Remember which module wrote this store, so readers need not be told again.
        store.write({_SIGNALS_MODULE_KEY: settings.signals.encode()})
    except Exception:
        store.close()
        raise
    return Processor(settings, store, registry, engine, build_decoder(settings))


def open_store_reader(settings: Settings, signals: str | None = None) -> SignalReader:
    """A reader over a store another process may be writing (a RocksDB secondary)."""
    store = RocksStore(Path(settings.store.path), read_only=True)
    module = signals
    if module is None:
        stored = store.get_many([_SIGNALS_MODULE_KEY])[0]
        module = stored.decode() if stored else settings.signals
    try:
        registry = SignalRegistry.from_module(module)
    except Exception:
        store.close()
        raise
    return SignalReader(registry, store)
