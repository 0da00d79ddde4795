"""Settings: defaults, a TOML file, USERSIGNALS_* variables and overrides, in that order."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from usersignals import ConfigurationError
from usersignals.assembly import build_decoder
from usersignals.config import (
    EventSettings,
    ProcessingSettings,
    Settings,
    StoreSettings,
)
from usersignals.errors import InvalidSettingError
from usersignals.ingest.kafka import librdkafka_settings

FULL_FILE = """\
signals = "my_project.signals"

[store]
path = "/var/lib/usersignals"
sync = true

[events]
allowed_actions = ["save", "click"]
max_event_bytes = 4096
max_future_ms = 60000

[processing]
batch_size = 500
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "usersignals.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    settings = Settings.load(environ={})
    assert settings == Settings(
        signals="usersignals.examples.reference",
        store=StoreSettings(path="data/store", sync=False),
        events=EventSettings(allowed_actions=[], max_event_bytes=8192, max_future_ms=86_400_000),
        processing=ProcessingSettings(batch_size=50_000),
    )


def test_load_from_toml_file(tmp_path: Path) -> None:
    settings = Settings.load(write(tmp_path, FULL_FILE), environ={})
    assert settings == Settings(
        signals="my_project.signals",
        store=StoreSettings(path="/var/lib/usersignals", sync=True),
        events=EventSettings(
            allowed_actions=["save", "click"], max_event_bytes=4096, max_future_ms=60_000
        ),
        processing=ProcessingSettings(batch_size=500),
    )


def test_librdkafka_settings_in_toml_may_be_numbers_and_booleans(tmp_path: Path) -> None:
    """Found in an operator's trial: `"fetch.max.bytes" = 1048576` was refused as "not a
    table of names to values" (only strings were taken); librdkafka takes every property as
    text, so a TOML number or boolean is its text."""
    text = (
        '[kafka.consumer]\n"fetch.max.bytes" = 1048576\n"enable.partition.eof" = false\n'
        '"client.id" = "c"\n[kafka.producer]\n"linger.ms" = 5\n"batch.size" = 1.5e4\n'
    )
    settings = Settings.load(write(tmp_path, text), environ={})
    assert librdkafka_settings(settings.kafka.consumer) == {
        "fetch.max.bytes": "1048576",
        "enable.partition.eof": "false",
        "client.id": "c",
    }
    assert librdkafka_settings(settings.kafka.producer) == {
        "linger.ms": "5",
        "batch.size": "15000.0",
    }
    with pytest.raises(InvalidSettingError, match="a table of names to texts, numbers or"):
        Settings.load(write(tmp_path, '[kafka.consumer]\n"a" = [1]\n'), environ={})


def test_partial_file_keeps_the_other_defaults(tmp_path: Path) -> None:
    settings = Settings.load(write(tmp_path, "[store]\nsync = true\n"), environ={})
    assert settings.store == StoreSettings(path="data/store", sync=True)
    assert settings.processing.batch_size == 50_000
    assert settings.signals == "usersignals.examples.reference"


def test_environment_variables() -> None:
    settings = Settings.load(
        environ={
            "USERSIGNALS_STORE__PATH": "/tmp/store",
            "USERSIGNALS_STORE__SYNC": "true",
            "USERSIGNALS_PROCESSING__BATCH_SIZE": "50000",
            "USERSIGNALS_EVENTS__ALLOWED_ACTIONS": "a,b",
            "USERSIGNALS_EVENTS__MAX_FUTURE_MS": "1000",
            "USERSIGNALS_SIGNALS": "pkg.mod",
            "UNRELATED_VARIABLE": "ignored",
            "PATH": "/usr/bin",
        }
    )
    assert settings.store == StoreSettings(path="/tmp/store", sync=True)
    assert settings.processing.batch_size == 50_000
    assert isinstance(settings.processing.batch_size, int)
    assert settings.events.allowed_actions == ["a", "b"]
    assert settings.events.max_future_ms == 1000
    assert settings.signals == "pkg.mod"


def test_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERSIGNALS_PROCESSING__BATCH_SIZE", "123")
    assert Settings.load().processing.batch_size == 123


def test_precedence_file_then_environment_then_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[store]\npath = "from-file"\nsync = true\n[processing]\nbatch_size = 1\n'
        "[events]\nmax_event_bytes = 100\n",
    )
    environ = {
        "USERSIGNALS_STORE__PATH": "from-env",
        "USERSIGNALS_PROCESSING__BATCH_SIZE": "2",
    }
    overrides = {"store": {"path": "from-overrides"}}

    only_file = Settings.load(path, environ={})
    assert only_file.store.path == "from-file"
    assert only_file.processing.batch_size == 1

    file_and_env = Settings.load(path, environ=environ)
    assert file_and_env.store.path == "from-env"
    assert file_and_env.processing.batch_size == 2

    everything = Settings.load(path, environ=environ, overrides=overrides)
    assert everything.store.path == "from-overrides"
    assert everything.processing.batch_size == 2
    # Merging is per key: what a later source does not set keeps the earlier value.
    assert everything.store.sync is True
    assert everything.events.max_event_bytes == 100


def test_none_overrides_do_not_override(tmp_path: Path) -> None:
    path = write(tmp_path, '[store]\npath = "from-file"\n')
    settings = Settings.load(path, environ={}, overrides={"store": {"path": None}, "signals": None})
    assert settings.store.path == "from-file"
    assert settings.signals == "usersignals.examples.reference"


def test_unknown_key_in_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[store]\npaht = 'typo'\n")
    with pytest.raises(
        ConfigurationError, match=r"unknown setting store\.paht .*: store has .*path"
    ):
        Settings.load(path, environ={})


def test_unknown_section_in_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"unknown setting flink .*the settings have"):
        Settings.load(write(tmp_path, "[flink]\nbrokers = 'x'\n"), environ={})


def test_unknown_field_in_a_known_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"unknown setting kafka\.brokers .*: kafka has"):
        Settings.load(write(tmp_path, "[kafka]\nbrokers = 'x'\n"), environ={})


def test_unknown_environment_variable_is_named_as_it_was_set() -> None:
    """Found in an operator's trial: `USERSIGNALS_BOGUS=1` was refused as an unknown field
    `bogus`, which named neither the variable nor where it went."""
    with pytest.raises(ConfigurationError, match="USERSIGNALS_PROCESSING__BATCHSIZE in the env"):
        Settings.load(environ={"USERSIGNALS_PROCESSING__BATCHSIZE": "5"})
    with pytest.raises(ConfigurationError, match=r"unknown setting bogus \(USERSIGNALS_BOGUS "):
        Settings.load(environ={"USERSIGNALS_BOGUS": "1"})


def test_a_dotted_name_in_a_section_is_named_as_written_with_where_it_belongs(
    tmp_path: Path,
) -> None:
    """Found in review: `"fetch.max.bytes"` under `[kafka]` was named as section
    `kafka.fetch.max` and a variable no environment can hold."""
    path = write(tmp_path, '[kafka]\n"fetch.max.bytes" = 1048576\n')
    with pytest.raises(ConfigurationError) as raised:
        Settings.load(path, environ={})
    message = str(raised.value)
    assert message.startswith("unknown setting 'fetch.max.bytes' in kafka: kafka has ")
    assert "[kafka.consumer]" in message
    assert "USERSIGNALS_" not in message


def test_unknown_override() -> None:
    with pytest.raises(ConfigurationError, match="unknown setting colour"):
        Settings.load(environ={}, overrides={"colour": "blue"})


def test_wrong_type_names_the_setting() -> None:
    with pytest.raises(InvalidSettingError) as info:
        Settings.load(environ={"USERSIGNALS_PROCESSING__BATCH_SIZE": "many"})
    assert (info.value.setting, info.value.value) == ("processing.batch_size", "many")


def test_wrong_type_in_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidSettingError) as info:
        Settings.load(write(tmp_path, "[store]\nsync = 'sometimes'\n"), environ={})
    assert (info.value.setting, info.value.allowed) == ("store.sync", "true or false")


# -- values out of bounds are refused at load time, naming setting, value and what is allowed


@pytest.mark.parametrize(
    ("overrides", "setting", "value", "allowed"),
    [
        ({"processing": {"batch_size": -5}}, "processing.batch_size", -5, "an integer >= 1"),
        ({"serving": {"port": -1}}, "serving.port", -1, "an integer >= 1 and <= 65535"),
        ({"serving": {"port": 70_000}}, "serving.port", 70_000, "an integer >= 1 and <= 65535"),
        ({"serving": {"mode": "bogus"}}, "serving.mode", "bogus", "one of 'raw', 'stateful'"),
        ({"serving": {"workers": 0}}, "serving.workers", 0, "an integer >= 1"),
        (
            {"store": {"backend": "nope"}},
            "store.backend",
            "nope",
            "one of 'redis', 'redis-cluster', 'rocksdb'",
        ),
        ({"kafka": {"batch_max_events": 0}}, "kafka.batch_max_events", 0, "an integer >= 1"),
        ({"events": {"max_event_bytes": -1}}, "events.max_event_bytes", -1, "an integer >= 1"),
        (
            {"enrich": {"sources": {"items": {"kind": "ftp"}}}},
            "enrich.sources.items.kind",
            "ftp",
            "one of 'http', 'redis', 'table'",
        ),
        (
            {"enrich": {"sources": {"items": {"on_failure": "ignore"}}}},
            "enrich.sources.items.on_failure",
            "ignore",
            "one of 'hold', 'missing'",
        ),
        (
            {"enrich": {"sources": {"items": {"retries": -1}}}},
            "enrich.sources.items.retries",
            -1,
            "an integer >= 0",
        ),
        (
            {"serving": {"gc": {"young_threshold": 0}}},
            "serving.gc.young_threshold",
            0,
            "an integer >= 1",
        ),
        (
            {"serving": {"gc": {"full_interval_ms": -1}}},
            "serving.gc.full_interval_ms",
            -1,
            'an integer >= 0 of milliseconds, or a duration such as "250ms", "10s", "1m"',
        ),
        (
            {"serving": {"feature_log_rate": 1.5}},
            "serving.feature_log_rate",
            1.5,
            "a number >= 0 and <= 1",
        ),
    ],
)
def test_bad_values_name_the_setting_the_value_and_what_is_allowed(
    overrides: dict[str, Any], setting: str, value: object, allowed: str
) -> None:
    with pytest.raises(InvalidSettingError) as info:
        Settings.load(environ={}, overrides=overrides)
    error = info.value
    assert (error.setting, error.value, error.allowed) == (setting, value, allowed)
    assert str(error) == f"setting {setting} = {value!r} is not allowed: expected {allowed}"


def test_bad_environment_values_are_refused_too() -> None:
    with pytest.raises(InvalidSettingError) as info:
        Settings.load(environ={"USERSIGNALS_PROCESSING__BATCH_SIZE": "-5"})
    assert info.value.setting == "processing.batch_size"
    with pytest.raises(InvalidSettingError, match=r"serving\.mode = 'bogus'"):
        Settings.load(environ={"USERSIGNALS_SERVING__MODE": "bogus"})


def test_bad_file_values_are_refused_too(tmp_path: Path) -> None:
    with pytest.raises(InvalidSettingError, match=r"store\.backend = 'nope'"):
        Settings.load(write(tmp_path, "[store]\nbackend = 'nope'\n"), environ={})


def test_duration_settings_take_a_unit_or_a_number_in_the_named_unit() -> None:
    settings = Settings.load(
        environ={
            "USERSIGNALS_KAFKA__BATCH_MAX_WAIT_MS": "2s",
            "USERSIGNALS_SERVING__REFRESH_INTERVAL_MS": "50",
        },
        overrides={
            "events": {"max_future_ms": timedelta(hours=1)},
            "enrich": {"sources": {"items": {"cache_ttl_s": "5m", "negative_ttl_s": "1500ms"}}},
        },
    )
    assert settings.kafka.batch_max_wait_ms == 2_000
    assert settings.serving.refresh_interval_ms == 50
    assert settings.events.max_future_ms == 3_600_000
    assert settings.enrich.sources["items"].cache_ttl_s == 300
    assert settings.enrich.sources["items"].negative_ttl_s == 1.5


def test_a_bad_duration_setting_says_how_to_write_one() -> None:
    with pytest.raises(InvalidSettingError) as info:
        Settings.load(environ={"USERSIGNALS_KAFKA__BATCH_MAX_WAIT_MS": "soon"})
    assert info.value.setting == "kafka.batch_max_wait_ms"
    assert info.value.allowed == (
        'an integer >= 1 of milliseconds, or a duration such as "250ms", "10s", "1m"'
    )


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[store\npath = 1\n")
    with pytest.raises(ConfigurationError, match="cannot read settings file") as info:
        Settings.load(path, environ={})
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read settings file"):
        Settings.load(tmp_path / "absent.toml", environ={})


def test_allowed_actions_reach_the_decoder() -> None:
    restricted = build_decoder(
        Settings.load(environ={"USERSIGNALS_EVENTS__ALLOWED_ACTIONS": "save,click"})
    )
    assert restricted.policy.allowed_actions == frozenset({"save", "click"})
    assert build_decoder(Settings.load(environ={})).policy.allowed_actions is None


def test_empty_allowed_actions_variable_means_any_action() -> None:
    settings = Settings.load(environ={"USERSIGNALS_EVENTS__ALLOWED_ACTIONS": ""})
    assert settings.events.allowed_actions == []
    assert build_decoder(settings).policy.allowed_actions is None


def test_allowed_actions_variable_is_trimmed() -> None:
    settings = Settings.load(environ={"USERSIGNALS_EVENTS__ALLOWED_ACTIONS": "save, click"})
    assert settings.events.allowed_actions == ["save", "click"]


def test_conflicting_environment_variables_are_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        Settings.load(environ={"USERSIGNALS_STORE": "x", "USERSIGNALS_STORE__PATH": "/p"})


def test_allowed_surfaces_and_user_id_limit_reach_the_decoder() -> None:
    environ = {
        "USERSIGNALS_EVENTS__ALLOWED_SURFACES": " home, search ",
        "USERSIGNALS_EVENTS__MAX_USER_ID_CHARS": "64",
    }
    policy = build_decoder(Settings.load(environ=environ)).policy
    assert policy.allowed_surfaces == frozenset({"home", "search"})
    assert policy.max_user_id_chars == 64
    defaults = build_decoder(Settings.load(environ={})).policy
    assert defaults.allowed_surfaces is None
    assert defaults.max_user_id_chars == 128


@pytest.mark.parametrize(
    ("backend", "url"),
    [
        ("redis", "127.0.0.1:26379"),  # no scheme: found by the operator's trial (a traceback)
        ("redis", "http://127.0.0.1:6379"),
        ("redis", "redis://a:1,redis://b:2"),  # several nodes: a cluster's
        ("redis-cluster", "redis://127.0.0.1:7000,127.0.0.1:7001"),
        ("redis-cluster", "unix:///tmp/redis.sock"),
        ("redis-cluster", "redis://:7000"),
        ("redis", "redis://h:port"),
    ],
)
def test_a_redis_url_that_cannot_work_is_refused_naming_the_setting(backend: str, url: str) -> None:
    with pytest.raises(InvalidSettingError) as info:
        Settings.load(environ={}, overrides={"store": {"backend": backend, "redis_url": url}})
    assert info.value.setting == "store.redis_url"
    assert "redis://HOST:PORT" in info.value.allowed


@pytest.mark.parametrize(
    ("backend", "url"),
    [
        ("redis", "redis://127.0.0.1:6379/0"),
        ("redis", "rediss://user:secret@cache.internal:6380/2"),
        ("redis", "unix:///run/redis.sock"),
        ("redis-cluster", "redis://10.0.0.1:7000"),
        ("redis-cluster", "redis://10.0.0.1:7000, redis://10.0.0.2:7000,redis://10.0.0.3:7000"),
        ("rocksdb", "not used by the embedded store"),
    ],
)
def test_redis_urls_that_can_work_are_taken(backend: str, url: str) -> None:
    settings = Settings.load(
        environ={}, overrides={"store": {"backend": backend, "redis_url": url}}
    )
    assert settings.store.redis_url == url


def test_a_redis_lookup_source_url_is_checked_too() -> None:
    sources = {"items": {"kind": "redis", "url": "localhost:6379"}}
    with pytest.raises(InvalidSettingError) as info:
        Settings.load(environ={}, overrides={"enrich": {"sources": sources}})
    assert info.value.setting == "enrich.sources.items.url"


def test_the_store_is_named_for_people_without_its_credentials() -> None:
    """Found by the operator's trial: `run` said "into data/store" with a Redis store."""
    cluster = {"backend": "redis-cluster", "redis_url": "redis://u:secret@a:7000,redis://b:7001"}
    settings = Settings.load(environ={}, overrides={"store": cluster})
    assert settings.store.where() == "redis-cluster redis://a:7000,redis://b:7001"
    assert Settings.load(environ={}).store.where() == "data/store"


def test_a_single_servers_password_may_hold_a_comma() -> None:
    """Found by the review: only a cluster's setting lists nodes; a comma in a single
    server's password was refused as a second node."""
    url = "redis://:pa,ss@cache.internal:6379/0"
    settings = Settings.load(
        environ={}, overrides={"store": {"backend": "redis", "redis_url": url}}
    )
    assert settings.store.redis_url == url


def test_a_store_is_named_with_brackets_and_socket_paths_kept() -> None:
    for url, shown in [
        ("redis://[::1]:7000", "redis redis://[::1]:7000"),
        ("unix:///tmp/redis.sock", "redis unix:///tmp/redis.sock"),
    ]:
        store = Settings.load(
            environ={}, overrides={"store": {"backend": "redis", "redis_url": url}}
        )
        assert store.store.where() == shown


def test_a_cluster_nodes_credentials_are_url_decoded_and_its_options_kept() -> None:
    """Found by the review: an encoded password (p%40ss) was sent as written, and the
    first URL's query options (ssl_ca_certs...) were dropped."""
    from usersignals.state.redis import cluster_options

    nodes, options = cluster_options(
        "rediss://u%3Ax:p%40ss@a:7000/?ssl_cert_reqs=none, redis://b:7001"
    )
    assert nodes == [("a", 7000), ("b", 7001)]
    assert options["username"] == "u:x"
    assert options["password"] == "p@ss"
    assert options["ssl_cert_reqs"] == "none"
