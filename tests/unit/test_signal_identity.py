"""Which stores a reader may serve: the writer's recorded signal definitions against its own."""

from __future__ import annotations

from pathlib import Path

from usersignals import Count, Signal, SignalRegistry, days
from usersignals.signals.identity import identity_problem, signals_identity


def clicks(version: int, by: str = "action", shadow: bool = False) -> Signal:
    return Signal(
        name="clicks", version=version, aggregate=Count(by=by), retention=days(7), shadow=shadow
    )


def test_the_same_definitions_under_another_module_name_are_served() -> None:
    recorded = signals_identity("deployed.py", SignalRegistry([clicks(1)]))
    assert identity_problem(recorded, "my_signals.py", SignalRegistry([clicks(1)])) is None


def test_a_shadow_version_the_writer_does_not_compute_yet_is_allowed() -> None:
    recorded = signals_identity("deployed.py", SignalRegistry([clicks(1)]))
    reader = SignalRegistry([clicks(1), clicks(2, by="surface", shadow=True)])
    assert identity_problem(recorded, "next.py", reader) is None


def test_another_definition_under_the_same_version_is_refused_naming_it() -> None:
    recorded = signals_identity("deployed.py", SignalRegistry([clicks(1)]))
    problem = identity_problem(recorded, "edited.py", SignalRegistry([clicks(1, by="surface")]))
    assert problem is not None
    assert "clicks@1" in problem
    assert "deployed.py" in problem
    assert "edited.py" in problem


def test_a_served_version_the_writer_does_not_compute_is_refused() -> None:
    recorded = signals_identity("deployed.py", SignalRegistry([clicks(1)]))
    problem = identity_problem(recorded, "ahead.py", SignalRegistry([clicks(2)]))
    assert problem is not None
    assert "not computed by the writer: clicks@2" in problem


def test_an_unreadable_record_is_refused() -> None:
    problem = identity_problem(b"\xff not json", "mine.py", SignalRegistry([clicks(1)]))
    assert problem is not None
    assert "cannot read" in problem


def test_a_processor_refuses_a_definition_changed_under_the_same_version(tmp_path: Path) -> None:
    """Found by the signal-author trial: `replay`/`run` with a signal edited but not
    re-versioned mixed the old and the new meaning in its stored state, silently; only
    readers refused the store afterwards. The processor now refuses at start."""
    import pytest

    from usersignals.app import build_processor
    from usersignals.config import Settings
    from usersignals.errors import ConfigurationError

    def settings(by: str, version: int = 1) -> Settings:
        module = tmp_path / f"signals_{by}_{version}.py"
        module.write_text(
            "from usersignals import Count, Signal\n"
            f"SIGNALS = [Signal(name='clicks', version={version}, aggregate=Count(by={by!r}))]\n"
        )
        overrides = {"signals": str(module), "store": {"path": str(tmp_path / "store")}}
        return Settings.load(environ={}, overrides=overrides)

    build_processor(settings("action")).close()
    build_processor(settings("action")).close()  # the same definitions: fine
    with pytest.raises(ConfigurationError, match=r"clicks@1.*bump its version"):
        build_processor(settings("surface"))
    build_processor(settings("surface", version=2)).close()  # a new version: fine


def described(text: str, shadow: bool = False) -> Signal:
    return Signal(name="clicks", version=1, aggregate=Count(by="action"), retention=days(7),
                  description=text, shadow=shadow)  # fmt: skip


def test_a_description_or_shadow_flag_is_no_change_of_meaning() -> None:
    """Found by the signal-author trial: adding a description made `plan` say `changed`,
    `apply` refuse, and readers refuse the store; so would promoting a shadow version by
    editing the module (shadow is how a version is deployed, not what it computes)."""
    from usersignals.offline.plan import make_plan
    from usersignals.signals.identity import changed_definitions
    from usersignals.state.versions import VersionTable

    for before, after in [(described(""), described("Clicks by action.")),
                          (described("", shadow=True), described(""))]:  # fmt: skip
        recorded = signals_identity("m.py", SignalRegistry([before]))
        assert identity_problem(recorded, "m.py", SignalRegistry([after])) is None
        assert changed_definitions(recorded, SignalRegistry([after])) == []
        table = VersionTable()
        table.applied = {before.key: definition_text(before)}
        plan = make_plan(SignalRegistry([after]), table, set())
        assert [change.kind for change in plan.changes] == ["unchanged"]


def test_a_digest_recorded_by_the_previous_release_still_matches() -> None:
    """Stores written before: digests of the whole compiled definition (description and
    shadow flag included) are still recognised."""
    import hashlib
    import json

    signal = described("Clicks by action.")
    legacy = hashlib.sha256(json.dumps(signal.to_json(), sort_keys=True).encode()).hexdigest()
    recorded = json.dumps({"module": "m.py", "signals": {signal.key: legacy}}).encode()
    assert identity_problem(recorded, "m.py", SignalRegistry([signal])) is None


def definition_text(signal: Signal) -> str:
    from usersignals.state.versions import definition_text as text

    return text(signal)


def test_a_reader_of_the_previous_release_still_serves_what_this_release_writes() -> None:
    """Found by the review: the new digests alone made every reader not yet upgraded refuse
    the store (503) as soon as a processor was. The record keeps the previous release's
    digests under `signals` (what such a reader compares) beside this release's."""
    import hashlib
    import json

    signal = described("Clicks by action.")
    record = json.loads(signals_identity("m.py", SignalRegistry([signal])))
    previous = hashlib.sha256(json.dumps(signal.to_json(), sort_keys=True).encode()).hexdigest()
    assert record["signals"] == {signal.key: previous}
    # And this release compares the meanings: a description edit is no change.
    recorded = json.dumps(record).encode()
    assert identity_problem(recorded, "m.py", SignalRegistry([described("Other words.")])) is None
