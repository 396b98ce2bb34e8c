"""Fixtures shared by the serving tests: the tiny LLM behind an engine, the synthetic catalogue, a briefly
trained two-tower recommender, a random soft-token table and a ChatService over all of them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from retrieval.catalogue import Catalogue

SOFT_TOKENS_PER_ITEM = 4


@pytest.fixture(scope="session")
def tiny_llm(tiny_llm_dir: Path):
    """(model, tokenizer) of the tiny random Llama, float32, eval mode, no gradients."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llm_dir, dtype=torch.float32).eval()
    model.requires_grad_(False)
    return model, AutoTokenizer.from_pretrained(tiny_llm_dir)


@pytest.fixture(scope="session")
def engine(tiny_llm):
    from serving.engines.transformers import TransformersEngine

    return TransformersEngine(*tiny_llm)


@pytest.fixture(scope="session")
def movielens(movielens_dir: Path):
    from retrieval.data import load_movielens

    return load_movielens("ml-latest-small", path=movielens_dir, download=False)


@pytest.fixture(scope="session")
def catalogue(movielens) -> Catalogue:
    """40 real titles; movieId = position in `tests.synthetic.MOVIES` + 1."""
    return movielens.catalogue


@pytest.fixture(scope="session")
def ids_by_title(catalogue: Catalogue) -> dict[str, int]:
    return {m.title: m.item_id for m in catalogue}


@pytest.fixture(scope="session")
def recommender(movielens):
    """A two-tower recommender trained for a few seconds on the synthetic ratings."""
    from retrieval.config import RetrievalConfig
    from retrieval.train import train_retrieval

    config = RetrievalConfig(epochs=15, embedding_dim=16, num_negatives=16)
    return train_retrieval(movielens, config, progress=False).recommender


@pytest.fixture(scope="session")
def soft_table(catalogue: Catalogue, engine):
    """Random soft tokens `[n_items, K, 256]` at the scale of the tiny LLM's input embeddings."""
    from ilm_model.soft_tokens import SoftTokenTable

    generator = torch.Generator().manual_seed(0)
    tokens = 0.5 * torch.randn(len(catalogue), SOFT_TOKENS_PER_ITEM, engine.hidden_size, generator=generator)
    return SoftTokenTable(catalogue.ids, tokens)


@pytest.fixture()
def service(catalogue, recommender, soft_table, engine):
    from serving.config import ServingConfig
    from serving.service import ChatService
    from serving.session_store import InMemorySessionStore

    return ChatService(catalogue, recommender, soft_table, engine, InMemorySessionStore(),
                       ServingConfig(reply_max_tokens=8))
