"""Serving workers take the signals module from configuration only, and refuse a store
written with other signals (issue 9, item 10)."""

from __future__ import annotations

from pathlib import Path

import pytest

from usersignals.app import build_processor, open_store_reader
from usersignals.config import Settings, StoreSettings
from usersignals.errors import ConfigurationError
from usersignals.state import RocksStore
from usersignals.state.keys import meta_key

OTHER_SIGNALS = """
from usersignals import Count, Signal, days

clicks = Signal(name="clicks", version={version}, aggregate=Count(), retention=days(7))
"""


def write_store(path: Path, signals: str) -> None:
    processor = build_processor(Settings(signals=signals, store=StoreSettings(path=str(path))))
    processor.close()


def test_a_module_name_written_into_the_store_is_never_imported(tmp_path: Path) -> None:
    store = tmp_path / "store"
    write_store(store, "usersignals.examples.reference")
    marker = tmp_path / "imported"
    planted = tmp_path / "planted.py"
    planted.write_text(f"open({str(marker)!r}, 'w').close()\n")
    # Whoever can write the store (a shared Redis, say) records a module of their choosing.
    writer = RocksStore(store)
    identity = b'{"module": "%s", "sha256": "0"}' % str(planted).encode()
    writer.write({meta_key("signals_module"): str(planted).encode(), meta_key("signals"): identity})
    writer.close()
    with pytest.raises(ConfigurationError, match="planted"):
        open_store_reader(Settings(store=StoreSettings(path=str(store))))
    assert not marker.exists(), "the reader imported a module named by the store"


def test_a_store_written_with_another_version_or_module_is_refused_clearly(
    tmp_path: Path,
) -> None:
    module = tmp_path / "clicks.py"
    module.write_text(OTHER_SIGNALS.format(version=1))
    store = StoreSettings(path=str(tmp_path / "store"))
    write_store(Path(store.path), str(module))
    reader = open_store_reader(Settings(signals=str(module), store=store))  # the same: served
    assert [signal.name for signal in reader.registry] == ["clicks"]
    reader.store.close()

    module.write_text(OTHER_SIGNALS.format(version=2))  # the readers got the next version first
    with pytest.raises(ConfigurationError) as refused:
        open_store_reader(Settings(signals=str(module), store=store))
    assert "clicks.py" in str(refused.value)
    assert "definitions" in str(refused.value)
    with pytest.raises(ConfigurationError, match=r"usersignals\.examples\.reference"):
        open_store_reader(Settings(store=store))  # another module altogether
