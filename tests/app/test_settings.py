"""Settings precedence: CLI overrides > ILMREC_* env > YAML file > defaults; secrets masked."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import load_settings


def test_defaults_are_embedded_cpu_setup():
    settings = load_settings()
    assert settings.server.host == "127.0.0.1"
    assert settings.llm == "bundled"
    assert settings.data.dataset == "ml-latest-small"


def test_yaml_then_env_then_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    config = tmp_path / "ilmrec.yaml"
    config.write_text("server:\n  port: 9001\n  model_name: from-yaml\nllm: some/model\n")
    assert load_settings(config).server.port == 9001
    monkeypatch.setenv("ILMREC_SERVER__PORT", "9002")
    settings = load_settings(config)
    assert settings.server.port == 9002
    assert settings.server.model_name == "from-yaml"
    assert settings.llm == "some/model"
    assert load_settings(config, server={"port": 9003}).server.port == 9003


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ILMREC_SERVER__PORT", "70000")
    with pytest.raises(ValidationError, match="port"):
        load_settings()


def test_missing_config_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_api_keys_are_masked(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ILMREC_SERVER__API_KEYS", '["sk-very-secret"]')
    shown = load_settings().masked_json()
    assert "sk-very-secret" not in shown
    assert "**********" in shown
