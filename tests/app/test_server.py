"""The served app: API and Gradio UI on one loopback port, driven by the openai client and gradio_client."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from gradio_client import Client
from openai import OpenAI

from app.commands import build_service
from app.server import create_app


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def base_url(tiny_settings, tiny_artefacts) -> Iterator[str]:
    port = _free_port()
    app = create_app(tiny_settings, build_service(tiny_settings, tiny_artefacts))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_root_redirects_to_ui_and_ui_serves(base_url):
    response = httpx.get(base_url + "/", follow_redirects=True)
    assert response.status_code == 200
    assert str(response.url).endswith("/ui/")
    assert "gradio" in response.text.lower()
    assert httpx.get(base_url + "/health").status_code == 200


def test_api_answers_with_catalogue_recommendations(base_url, tiny_artefacts):
    client = OpenAI(base_url=base_url + "/v1", api_key="unused")
    reply = client.chat.completions.create(
        model="ilmrec", messages=[{"role": "user", "content": "I loved Toy Story and Finding Nemo"}]
    )
    recommendations = reply.model_extra["recommendations"]
    assert recommendations
    assert all(rec["item_id"] in tiny_artefacts.catalogue for rec in recommendations)


def test_ui_chat_endpoint_streams_reply_and_cards(base_url):
    client = Client(base_url + "/ui/", verbose=False)
    # gr.State is per browser session and hidden from the API: inputs are (message, history)
    history, cards, box = client.predict("I loved Toy Story and Finding Nemo", [], api_name="/chat")
    assert history[-1]["role"] == "assistant"
    parts = history[-1]["content"]  # Gradio 6 returns message content as typed parts
    assert "".join(part["text"] for part in parts if part["type"] == "text").strip()
    assert "rec-card" in cards
    assert box == ""
