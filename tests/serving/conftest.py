"""Fixtures shared by the serving tests: the tiny LLM behind an engine, the synthetic catalogue, a briefly
trained two-tower recommender, a random soft-token table, a ChatService over all of them, and a throwaway
redis-server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from retrieval.catalogue import Catalogue
from serving.processes import stop_process


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
    from tests.tiny_system import train_tiny_recommender

    return train_tiny_recommender(movielens)


@pytest.fixture(scope="session")
def soft_table(catalogue: Catalogue, engine):
    """Random soft tokens `[n_items, K, 256]` at the scale of the tiny LLM's input embeddings."""
    from tests.tiny_system import random_soft_tokens

    return random_soft_tokens(catalogue, engine.hidden_size)


@pytest.fixture()
def service(catalogue, recommender, soft_table, engine):
    from serving.config import ServingConfig
    from serving.service import ChatService
    from serving.session_store import InMemorySessionStore

    return ChatService(catalogue, recommender, soft_table, engine, InMemorySessionStore(),
                       ServingConfig(reply_max_tokens=8))


@pytest.fixture()
def saved_system(tmp_path: Path, movielens_dir: Path, tiny_llm_dir: Path, recommender, soft_table) -> Path:
    """The tiny test system on disk, as `tests.serving.api_process` serves it."""
    shutil.copytree(movielens_dir, tmp_path / "system" / "movielens")
    shutil.copytree(tiny_llm_dir, tmp_path / "system" / "llm")
    recommender.save(tmp_path / "system" / "recommender")
    soft_table.save(tmp_path / "system" / "soft_tokens.safetensors")
    return tmp_path / "system"


def free_port() -> int:
    """A loopback TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server on a free loopback port, without persistence, in a temporary folder; yields its URL."""
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed: `apt-get install redis-server` (.ci/run does this)")
    workdir = tmp_path_factory.mktemp("redis")
    port, log = free_port(), workdir / "redis.log"
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--logfile", str(log)],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    output = log.read_text(errors="replace") if log.exists() else ""
                    pytest.fail(f"redis-server did not answer PING on port {port}:\n{output[-2000:]}")
                time.sleep(0.05)
        yield url
    finally:
        client.close()
        stop_process(process, timeout_s=10)


@pytest.fixture()
def dead_redis_url() -> str:
    """A Redis URL (with a password) on a loopback port where nothing listens."""
    return f"redis://:hunter2@127.0.0.1:{free_port()}/0"


@pytest.fixture()
def redis_url(redis_server: str) -> str:
    """The shared test redis-server, emptied for this test."""
    import redis

    with redis.Redis.from_url(redis_server) as client:
        client.flushall()
    return redis_server
