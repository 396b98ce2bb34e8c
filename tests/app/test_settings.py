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


def test_training_device_and_llm_dtype(monkeypatch: pytest.MonkeyPatch):
    assert (load_settings().device, load_settings().llm_dtype) == ("auto", "float32")
    monkeypatch.setenv("ILMREC_DEVICE", "cuda:1")
    monkeypatch.setenv("ILMREC_LLM_DTYPE", "bfloat16")
    assert (load_settings().device, load_settings().llm_dtype) == ("cuda:1", "bfloat16")
    monkeypatch.setenv("ILMREC_DEVICE", "gpu")
    with pytest.raises(ValidationError, match="device"):
        load_settings()


def test_missing_config_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_api_keys_are_masked(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ILMREC_SERVER__API_KEYS", '["sk-very-secret"]')
    shown = load_settings().masked_json()
    assert "sk-very-secret" not in shown
    assert "**********" in shown


def test_user_paths_are_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ilmrec.yaml").write_text("cache_dir: ~/cache\nsession_log: logs/../s.jsonl\ndata:\n  path: ~/ml\n")
    settings = load_settings(Path("~/ilmrec.yaml"))
    assert settings.cache_dir == settings.cache == tmp_path.resolve() / "cache"
    assert settings.session_log == tmp_path.resolve() / "s.jsonl"
    assert settings.data.path == tmp_path.resolve() / "ml"


def test_output_paths_of_the_wrong_kind_are_refused(tmp_path: Path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValidationError, match=r"cache_dir\n.*is a file; give a folder to write into"):
        load_settings(cache_dir=tmp_path / "file")
    with pytest.raises(ValidationError, match=r"session_log\n.*is a folder; give a file path"):
        load_settings(session_log=tmp_path)
    with pytest.raises(FileNotFoundError, match="config file .* is a folder"):
        load_settings(tmp_path)
