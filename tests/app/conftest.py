"""Fixtures for app tests: tiny settings (synthetic MovieLens, tiny LLM, tiny Q-Former), their artefacts, the served app."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.pipeline import Artefacts, prepare
from app.settings import Settings, load_settings
from serving.service import ChatService

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


@dataclass
class LiveApp:
    """The app (API + UI) served by uvicorn on a loopback port, and the ChatService behind it."""

    url: str
    service: ChatService


@contextmanager
def serve_in_thread(settings: Settings, service: ChatService) -> Iterator[str]:
    """Serve `create_app(settings, service)` on a free 127.0.0.1 port in a thread; yield its base URL."""
    import uvicorn

    from app.server import create_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = create_app(settings, service)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def live_app(tiny_settings: Settings, tiny_artefacts: Artefacts) -> Iterator[LiveApp]:
    from app.commands import build_service

    service = build_service(tiny_settings, tiny_artefacts)
    with serve_in_thread(tiny_settings, service) as url:
        yield LiveApp(url, service)
