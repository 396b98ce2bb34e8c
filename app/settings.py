"""The one settings object, read from (highest first) CLI overrides, `ILMREC_*` env vars, a YAML file, defaults.

Nested fields use `__` in env vars: `ILMREC_SERVER__PORT=9000`, `ILMREC_RETRIEVAL__EPOCHS=5`.
Packages below `app` take plain pydantic config sections from here; nothing else reads the environment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from app.errors import SettingsError
from app.paths import existing_file, output_file, output_folder, user_path
from ilm_model.configuration import ILMConfig, LLMDType
from retrieval.config import DeviceSetting, RetrievalConfig
from serving.config import ServingConfig, SessionStoreConfig

DatasetName = Literal["ml-latest-small", "ml-100k", "ml-1m", "ml-20m", "ml-25m"]


class DataSettings(BaseModel):
    """Which MovieLens data to train on and where it comes from."""

    dataset: DatasetName = Field("ml-latest-small", description="MovieLens variant to train on.")
    path: Path | None = Field(
        None, description="A local folder in GroupLens format; when unset the data is downloaded into the cache."
    )
    download: bool = Field(True, description="Allow downloading from GroupLens (falls back to ML-100K offline).")

    @field_validator("path")
    @classmethod
    def _resolve(cls, path: Path | None) -> Path | None:
        return None if path is None else user_path(path)


class ServerSettings(BaseModel):
    """Where the API and UI listen."""

    host: str = Field("127.0.0.1", description="Bind address; loopback by default.")
    port: int = Field(8000, ge=1, le=65535, description="Port for the API (/v1) and the UI (/).")
    model_name: str = Field("ilmrec", description="Model id reported by /v1/models.")
    api_keys: list[SecretStr] = Field(
        default_factory=list, description="Accepted bearer keys; empty means no authentication (loopback use)."
    )


class Settings(BaseSettings):
    """Everything `ilmrec` can be told."""

    model_config = SettingsConfigDict(env_prefix="ILMREC_", env_nested_delimiter="__", extra="forbid")

    cache_dir: Path = Field(Path("~/.cache/ilmrec"), description="Downloads, converted models and trained artefacts.")
    llm: str = Field("bundled", description="Frozen chat LLM: `bundled` (SmolLM2-135M-Instruct) or a HF id or path.")
    llm_dtype: LLMDType = Field(
        "float32", description="Weights of the frozen LLM while the ILM trains; bfloat16 halves a big LLM on a GPU."
    )
    device: DeviceSetting = Field(
        "auto", description="Where retrieval and ILM train: auto (cuda if available, else cpu), cpu, cuda, cuda:N."
    )
    session_log: Path | None = Field(
        None, description="Append-only JSONL log of every served turn; default <cache_dir>/logs/sessions.jsonl."
    )
    conversation_logs: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="CRSLab-style JSONL files of logged conversations (ReDial or INSPIRED "
        "format, entity2id.json beside each) that teach the ranking what people ask for (the conversation prior, "
        "`serving.ranking.prior_weight`); none by default. Keep the dialogues you evaluate on out of them. In the "
        "environment: one path, or several separated by commas or as a JSON list.",
    )
    data: DataSettings = Field(default_factory=DataSettings)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    ilm: ILMConfig = Field(default_factory=ILMConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    server: ServerSettings = Field(default_factory=ServerSettings)
    session_store: SessionStoreConfig = Field(
        default_factory=SessionStoreConfig,
        description="`memory` or a Redis URL (ILMREC_SESSION_STORE__URL=redis://127.0.0.1:6379/0), and TTL.",
    )

    @field_validator("cache_dir")
    @classmethod
    def _cache_is_a_folder(cls, path: Path) -> Path:
        return output_folder(path)

    @field_validator("conversation_logs", mode="before")
    @classmethod
    def _logs_from_text(cls, value: Any) -> Any:
        if isinstance(value, str):  # from the environment: a JSON list, or comma-separated paths
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [p.strip() for p in text.split(",") if p.strip()]
        return value

    @field_validator("conversation_logs")
    @classmethod
    def _logs_exist(cls, paths: list[Path]) -> list[Path]:
        try:
            return list(dict.fromkeys(existing_file(p, "conversation log") for p in paths))  # each file once
        except FileNotFoundError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("session_log")
    @classmethod
    def _session_log_is_a_file(cls, path: Path | None) -> Path | None:
        return None if path is None else output_file(path)

    @property
    def cache(self) -> Path:
        return self.cache_dir.expanduser().resolve()

    def masked_json(self) -> str:
        """The effective settings as JSON, secrets masked."""
        return json.dumps(json.loads(self.model_dump_json()), indent=2)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings: `overrides` (the CLI's) > env > `config_file` (YAML) > defaults."""
    if config_file is not None:
        config_file = existing_file(config_file, "config file")

    class _Settings(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
            if config_file is not None:
                sources += (YamlConfigSettingsSource(settings_cls, yaml_file=config_file),)
            return sources

    try:
        return _Settings(**overrides)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise SettingsError(f"{config_file}{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
