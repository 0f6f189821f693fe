"""Settings: safe defaults for development, refusal of example secrets elsewhere."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.settings import EXAMPLE_MASTER_KEY, Settings


def test_development_defaults_run_locally(monkeypatch) -> None:
    for name in ("GATEWAY_REDIS_URL", "GATEWAY_UPSTREAMS", "GATEWAY_ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)
    assert settings.redis_url == "redis://127.0.0.1:6380/0"
    assert [u.api_base for u in settings.upstreams] == [
        "http://127.0.0.1:8000/v1",
        "http://127.0.0.1:8001/v1",
    ]
    assert settings.master_key == EXAMPLE_MASTER_KEY


@pytest.mark.parametrize("key", ["", EXAMPLE_MASTER_KEY])
def test_production_refuses_missing_or_example_master_key(key: str) -> None:
    with pytest.raises(ValidationError, match="GATEWAY_MASTER_KEY"):
        Settings(_env_file=None, environment="production", master_key=key)
    Settings(_env_file=None, environment="production", master_key="sk-a-real-secret-value")


def test_serve_stops_with_a_message_naming_the_variable(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from gateway.cli import app

    monkeypatch.chdir(tmp_path)  # no .env of the developer's is read
    monkeypatch.delenv("GATEWAY_MASTER_KEY", raising=False)
    result = CliRunner().invoke(app, ["serve"], env={"GATEWAY_ENVIRONMENT": "production"})
    assert result.exit_code == 2
    assert "GATEWAY_MASTER_KEY" in result.output


def test_upstreams_and_aliases_from_json(monkeypatch) -> None:
    monkeypatch.setenv(
        "GATEWAY_UPSTREAMS",
        '[{"name": "ext", "base_url": "https://api.example.test/v1", "models": ["m"],'
        ' "weight": 2, "api_key_env": "EXT_KEY"}]',
    )
    monkeypatch.setenv("EXT_KEY", "sk-ext")
    monkeypatch.setenv("GATEWAY_MODEL_ALIASES", '{"default": "m"}')
    settings = Settings(_env_file=None)
    upstream = settings.upstreams[0]
    assert (upstream.api_base, upstream.weight, upstream.api_key) == (
        "https://api.example.test/v1",
        2.0,
        "sk-ext",
    )
    assert settings.model_aliases == {"default": "m"}
