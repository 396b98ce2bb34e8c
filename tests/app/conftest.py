"""Fixtures for app tests: tiny settings (synthetic MovieLens, tiny LLM, tiny Q-Former) and their artefacts."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.pipeline import Artefacts, prepare
from app.settings import Settings, load_settings

TINY_ILM = {
    "qformer": {
        "text_encoder": None,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "num_query_tokens": 2,
        "cf_token_size": 32,
        "embed_dim": 16,
        "max_text_length": 24,
    },
    "phase1": {"steps": 4, "batch_size": 8},
    "phase2": {"steps": 2, "batch_size": 2},
    "evaluation": {"heldout_items": 4, "generation_items": 2},
}


@pytest.fixture(scope="session")
def tiny_settings(movielens_dir: Path, tiny_llm_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    return load_settings(
        cache_dir=tmp_path_factory.mktemp("cache"),
        llm=str(tiny_llm_dir),
        data={"path": movielens_dir},
        retrieval={"epochs": 3, "embedding_dim": 16, "num_negatives": 16},
        ilm=TINY_ILM,
    )



@pytest.fixture(scope="session")
def tiny_artefacts(tiny_settings: Settings) -> Artefacts:
    return prepare(tiny_settings, progress=False)
