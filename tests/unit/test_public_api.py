"""The curated public API: ``usersignals.__all__`` and the one error tree."""

from __future__ import annotations

import importlib.metadata
import inspect

import pytest

import usersignals
from usersignals import errors

PUBLIC = list(usersignals.__all__)


def test_every_exported_name_exists() -> None:
    missing = [name for name in PUBLIC if not hasattr(usersignals, name)]
    assert missing == []


def test_no_name_is_exported_twice() -> None:
    assert len(set(PUBLIC)) == len(PUBLIC)


def test_all_is_sorted() -> None:
    assert sorted(PUBLIC) == PUBLIC


def test_star_import_gives_exactly_the_public_names() -> None:
    namespace: dict[str, object] = {}
    exec("from usersignals import *", namespace)  # the behaviour under test
    assert sorted(name for name in namespace if name != "__builtins__") == sorted(PUBLIC)


def test_exported_objects_come_from_the_package() -> None:
    foreign = [
        name
        for name in PUBLIC
        if (
            inspect.isclass(getattr(usersignals, name))
            or inspect.isfunction(getattr(usersignals, name))
        )
        and not getattr(usersignals, name).__module__.startswith("usersignals.")
    ]
    assert foreign == []


def exported_errors() -> list[tuple[str, type[BaseException]]]:
    return [
        (name, obj)
        for name in PUBLIC
        if inspect.isclass(obj := getattr(usersignals, name)) and issubclass(obj, BaseException)
    ]


def test_errors_are_exported() -> None:
    assert [name for name, _ in exported_errors()] == [
        "ApiError",
        "AsOfError",
        "BrokerError",
        "ConfigurationError",
        "ContextError",
        "EnrichmentError",
        "HandoverError",
        "IngestUnavailableError",
        "InvalidEventError",
        "InvalidSettingError",
        "NativeCoreError",
        "ServiceUnreachableError",
        "SignalDefinitionError",
        "SignalFailedError",
        "SignalNotFoundError",
        "SignalReadError",
        "SignalRetiredError",
        "SignalsMismatchError",
        "SparkTaskError",
        "SpoolWriteError",
        "StateCodecError",
        "StoreError",
        "UserSignalsError",
    ]


@pytest.mark.parametrize(("name", "error"), exported_errors())
def test_every_exported_error_is_in_the_tree(name: str, error: type[BaseException]) -> None:
    assert name.endswith("Error")
    assert issubclass(error, usersignals.UserSignalsError)
    assert error.__name__ == name


def test_every_name_ending_in_error_is_an_error() -> None:
    for name in PUBLIC:
        if name.endswith("Error"):
            obj = getattr(usersignals, name)
            assert inspect.isclass(obj)
            assert issubclass(obj, usersignals.UserSignalsError), name


def test_every_error_of_the_package_is_exported() -> None:
    defined = {
        name
        for name, obj in vars(errors).items()
        if inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and obj.__module__ == errors.__name__
    }
    assert defined <= set(PUBLIC)


def test_the_base_error_is_an_exception() -> None:
    assert issubclass(usersignals.UserSignalsError, Exception)
    assert usersignals.UserSignalsError.__bases__ == (Exception,)


def test_errors_carry_structured_fields() -> None:
    context = usersignals.ContextError("window", "bad")
    assert (context.parameter, str(context)) == ("window", "window: bad")
    definition = usersignals.SignalDefinitionError("s", ["one", "two"])
    assert definition.problems == ("one", "two")
    assert definition.signal == "s"
    assert str(definition) == "signal 's' is invalid: one; two"
    store = usersignals.StoreError("rocksdb", "write", "disk full")
    assert (store.backend, store.operation) == ("rocksdb", "write")
    codec = usersignals.StateCodecError(b"k", "truncated")
    assert codec.key == b"k"
    enrichment = usersignals.EnrichmentError("items", "timeout")
    assert enrichment.source == "items"
    as_of = usersignals.AsOfError("", 5, 9, "newer events").for_signal("interests")
    assert (as_of.signal, as_of.as_of_ms, as_of.earliest_ms) == ("interests", 5, 9)
    assert as_of.parameter == "as_of"
    handover = usersignals.HandoverError("usersignals", "broker down")
    assert handover.group == "usersignals"
    task = usersignals.SparkTaskError("ConfigurationError", "cannot read b.parquet")
    assert (task.kind, str(task)) == ("ConfigurationError", "cannot read b.parquet")
    not_found = usersignals.SignalNotFoundError("x", ["a", "b"])
    assert (not_found.name, not_found.known) == ("x", ("a", "b"))


def test_version_matches_the_installed_distribution() -> None:
    assert usersignals.__version__ == importlib.metadata.version("usersignals")


def test_the_embedded_graph_the_readme_shows_is_importable_from_the_package() -> None:
    """Found in a new-user trial: the README's "Processing and reading on an embedded store"
    builds ``Engine(SignalRegistry([...]), RocksStore(path), Materializer({...}))`` and reads
    with ``SignalReader``, but the last two had to be found in their sub-packages."""
    namespace: dict[str, object] = {}
    exec(  # the behaviour under test: the import a README reader writes
        "from usersignals import Engine, Materializer, RocksStore, SignalReader, "
        "SignalRegistry, TableSource",
        namespace,
    )
    assert {"Materializer", "SignalReader", "TableSource"} <= set(PUBLIC)
