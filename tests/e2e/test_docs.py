"""The settings example in docs/deploy.md is a valid settings file, as written."""

from __future__ import annotations

import re
from pathlib import Path

from usersignals.config import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"


def test_the_deploy_settings_example_loads(tmp_path: Path) -> None:
    (block,) = re.findall(r"```toml\n(.*?)```", DEPLOY.read_text(), flags=re.DOTALL)
    path = tmp_path / "usersignals.toml"
    path.write_text(block)
    settings = Settings.load(path, environ={})
    assert settings.store.backend == "redis-cluster"
    assert settings.kafka.topic == "engagements"
    assert settings.enrich.sources["items"].kind == "http"
    assert settings.enrich.sources["items"].on_failure == "hold"
    assert settings.serving.admin_token == "change-me"
