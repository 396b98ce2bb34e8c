"""Session-wide fixtures: a synthetic MovieLens folder and a tiny randomly initialised chat LLM."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def movielens_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic GroupLens-format folder (40 real titles, 120 users)."""
    from tests.synthetic import write_movielens

    return write_movielens(tmp_path_factory.mktemp("ml-synthetic"))


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama with its own tokenizer and chat template (`tests.tiny_system.write_tiny_llm`)."""
    from tests.tiny_system import write_tiny_llm

    return write_tiny_llm(tmp_path_factory.mktemp("tiny-llm"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data`, or a skip naming what is missing."""
    if not (SHARED_DATA / "ml-latest-small" / "ratings.csv").is_file():
        pytest.skip(f"shared data not found at {SHARED_DATA} (only present on the team's machines and CI)")
    return SHARED_DATA
