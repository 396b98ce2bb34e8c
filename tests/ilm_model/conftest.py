"""Fixtures of the ILM tests: a small real-title catalogue, a tiny Q-Former config and the tiny frozen LLM."""

from __future__ import annotations

import numpy as np
import pytest

from ilm_model.configuration import ILMConfig, QFormerConfig
from retrieval.catalogue import Catalogue, Movie
from tests.synthetic import MOVIES

CF_DIM = 16


@pytest.fixture(scope="session")
def catalogue() -> Catalogue:
    """The 40 synthetic movies, catalogue ids 10, 20, ... (so rows and ids differ)."""
    return Catalogue(
        Movie(item_id=10 * (i + 1), title=t, year=y, genres=tuple(g.split("|"))) for i, (t, y, g) in enumerate(MOVIES)
    )


@pytest.fixture(scope="session")
def cf_embeddings(catalogue: Catalogue) -> np.ndarray:
    """Random CF item vectors `[40, 16]`, rows aligned with the catalogue."""
    return np.random.default_rng(0).normal(size=(len(catalogue), CF_DIM)).astype(np.float32)


def tiny_qformer(**overrides) -> QFormerConfig:
    """A random 2-layer Q-Former of width 32 (MiniLM's tokenizer, no pretrained weights)."""
    values = dict(
        text_encoder=None,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_query_tokens=4,
        num_cf_tokens=2,
        cf_token_size=24,
        embed_dim=16,
        cf_embedding_size=CF_DIM,
        max_text_length=40,
    )
    return QFormerConfig(**(values | overrides))


@pytest.fixture
def tiny_config() -> ILMConfig:
    """Tiny Q-Former, adaptor to the tiny LLM's width 256, a few steps of each phase."""
    return ILMConfig(
        qformer=tiny_qformer(),
        llm_hidden_size=256,
        phase1={"steps": 4, "batch_size": 8, "warmup_steps": 1},
        phase2={"steps": 3, "batch_size": 4, "warmup_steps": 1, "learning_rate": 1e-3},
        evaluation={"heldout_items": 8, "generation_items": 3, "max_new_tokens": 6, "recall_after_phase1": True},
    )


@pytest.fixture(scope="session")
def tiny_llm(tiny_llm_dir, tmp_path_factory):
    """(model, tokenizer) of the session's tiny Llama, loaded frozen."""
    from ilm_model.llm_loading import load_frozen_llm

    return load_frozen_llm(str(tiny_llm_dir), tmp_path_factory.mktemp("ilm-cache"))


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Run these small-tensor tests on one intra-op thread (restored afterwards): on a shared 2-core machine,
    two OpenMP threads waiting on each other made the phase-1 test ~10x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
