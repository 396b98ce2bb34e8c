"""What `ilmrec eval` is asked to do: its flags and their validated form (light imports: parsed before torch loads)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import BaseModel, Field, field_validator, model_validator

from app.paths import output_folder, user_path

DEFAULT_K = (1, 5, 10, 20, 50)
SYSTEMS = ("popularity", "retrieval", "fusion", "text-llm", "dialogue", "endpoint", "logged")
DEFAULT_SYSTEMS = ("popularity", "retrieval", "fusion", "text-llm", "dialogue")
NEEDS_ARTEFACTS = frozenset({"retrieval", "fusion", "text-llm", "dialogue"})
NEEDS_ILM = frozenset({"fusion", "dialogue"})
"""Systems that need the ILM stage (ITC features, soft tokens); the others need only retrieval and the LLM."""
LLM_SYSTEMS = frozenset({"text-llm", "dialogue", "endpoint"})
"""Systems that generate text per turn (slow on CPU): `--llm-limit` samples their turns."""


class EvalOptions(BaseModel):
    """What `ilmrec eval` was asked to do."""

    redial: Path | None = Field(None, description="A CRSLab-style ReDial file (entity2id.json beside it).")
    inspired: Path | None = Field(None, description="A CRSLab-style INSPIRED file (entity2id.json beside it).")
    log: Path | None = Field(None, description="Our own session log (JSONL).")
    systems: list[str] = Field(default_factory=lambda: list(DEFAULT_SYSTEMS), description=f"Any of {', '.join(SYSTEMS)}.")
    limit: int | None = Field(None, ge=1, description="Evaluate a seeded random sample of this many turns per dataset.")
    llm_limit: int | None = Field(
        None, ge=1,
        description=f"The LLM systems ({', '.join(sorted(LLM_SYSTEMS))}) replay a seeded sample of this many turns "
        "per dataset (drawn from the turns the others replay); the report also scores every system on that sample.",
    )
    endpoint: str | None = Field(None, description="Base URL of an OpenAI-compatible API (e.g. http://host:8000/v1).")
    endpoint_model: str = Field("ilmrec", description="Model name sent to the endpoint.")
    out: Path = Field(Path("eval-report"), description="Folder for the report, results.json, plots, mappings.")
    system_config: Path | None = Field(
        None,
        description="A YAML or JSON file mapping system names to their settings, e.g. "
        "`fusion: {cf_weight: 1.0, text_weight: 0.5}` (fields of RetrievalConfig, FusionConfig, TextLLMConfig, "
        "DialogueConfig in app.evaluation.systems).",
    )
    artefacts: Path | None = Field(
        None,
        description="A finished artefact folder (<cache>/artifacts/<dataset>-<fingerprint>/) to evaluate as is, "
        "instead of the one the current settings fingerprint to (which trains when missing).",
    )
    seed: int = Field(0, description="Seeds the turn sample and every system.")
    k_list: list[int] = Field(default_factory=lambda: list(DEFAULT_K), description="Cut-offs for Recall/NDCG/MRR.")
    progress: bool = Field(True, description="Show a progress bar over turns.")

    @field_validator("redial", "inspired", "log", "system_config", "artefacts")
    @classmethod
    def _resolve(cls, path: Path | None) -> Path | None:
        return None if path is None else user_path(path)

    @field_validator("out")
    @classmethod
    def _out_is_a_folder(cls, path: Path) -> Path:
        return output_folder(path)

    @field_validator("systems")
    @classmethod
    def _known_systems(cls, systems: list[str]) -> list[str]:
        unknown = [s for s in systems if s not in SYSTEMS]
        if unknown:
            raise ValueError(f"unknown system(s) {unknown}; choose from {', '.join(SYSTEMS)}")
        if not systems:
            raise ValueError("name at least one system")
        return list(dict.fromkeys(systems))

    @model_validator(mode="after")
    def _consistent(self) -> EvalOptions:
        if not (self.redial or self.inspired or self.log):
            raise ValueError("give at least one dataset: --redial PATH, --inspired PATH or --log PATH")
        if "endpoint" in self.systems and not self.endpoint:
            raise ValueError("the endpoint system needs --endpoint URL")
        if "logged" in self.systems and not self.log:
            raise ValueError("the logged system replays a session log: give --log PATH")
        return self

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EvalOptions:
        given = {k: v for k, v in vars(args).items() if k in cls.model_fields and v is not None}
        if isinstance(given.get("systems"), str):
            given["systems"] = [s.strip() for s in given["systems"].split(",") if s.strip()]
        if args.endpoint and "systems" not in given:
            given["systems"] = [*DEFAULT_SYSTEMS, "endpoint"]
        return cls(**given)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `ilmrec eval` flags (the CLI adds its common ones: --config, --data-path, --seed, ...)."""
    parser.add_argument("--redial", type=Path, help="CRSLab-style ReDial JSONL (entity2id.json beside it)")
    parser.add_argument("--inspired", type=Path, help="CRSLab-style INSPIRED JSONL (entity2id.json beside it)")
    parser.add_argument("--log", type=Path, help="an ilmrec session log (JSONL) to replay")
    parser.add_argument("--systems", help=f"comma-separated, from {', '.join(SYSTEMS)} (default: {','.join(DEFAULT_SYSTEMS)})")
    parser.add_argument("--limit", type=int, help="evaluate a seeded random sample of N turns per dataset")
    parser.add_argument("--llm-limit", type=int,
                        help="the LLM systems (text-llm, dialogue, endpoint) replay a seeded sample of N turns per dataset")
    parser.add_argument("--endpoint", help="base URL of an OpenAI-compatible API to evaluate as system 'endpoint'")
    parser.add_argument("--endpoint-model", help="model name to send to --endpoint (default ilmrec)")
    parser.add_argument("--out", type=Path, help="report folder (default ./eval-report)")
    parser.add_argument("--system-config", type=Path,
                        help="YAML/JSON mapping system names to settings, e.g. 'fusion: {text_weight: 0.5}'")
    parser.add_argument("--artefacts", type=Path,
                        help="evaluate this finished artefact folder instead of training/loading by fingerprint")
