"""The OpenAI-compatible API, driven by the official `openai` client against a real uvicorn server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
import uvicorn
from fastapi.exceptions import RequestValidationError

from serving.api.protocol import ChatCompletionRequest
from serving.api.serving import create_error_response
from serving.api.server import build_app
from serving.errors import InvalidRequestError, UnknownSessionError

MODEL = "ilmrec-test"
KEY = "sk-test"


def _serve(app) -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    host, port = sock.getsockname()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture()
def base_url(service) -> Iterator[str]:
    yield from _serve(build_app(service, MODEL, api_keys=[KEY], max_body_bytes=200_000))


@pytest.fixture()
def client(base_url) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0, timeout=60)


def test_chat_completion(client, catalogue):
    response = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "I loved Toy Story and Finding Nemo"}], max_tokens=6
    )
    assert response.object == "chat.completion" and response.model == MODEL
    choice = response.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    recommendations = response.model_extra["recommendations"]
    assert len(recommendations) == 5
    for rec in recommendations:
        assert rec["item_id"] in catalogue and catalogue[rec["item_id"]].title == rec["title"]
        assert rec["title"] in choice.message.content and rec["reason"]
    assert response.usage.prompt_tokens > 0 and response.usage.total_tokens == (
        response.usage.prompt_tokens + response.usage.completion_tokens
    )
    session_id = response.model_extra["session_id"]

    follow_up = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "not animated"}], extra_body={"session_id": session_id}
    )
    assert follow_up.model_extra["session_id"] == session_id
    genres = [g for rec in follow_up.model_extra["recommendations"] for g in rec["genres"]]
    assert genres and "Animation" not in genres

    by_header = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "something darker"}],
        extra_headers={"X-Session-Id": session_id},
    )
    ids = {r["item_id"] for r in by_header.model_extra["recommendations"]}
    assert not ids & {r["item_id"] for r in recommendations + follow_up.model_extra["recommendations"]}


def test_streaming(client):
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "I loved Heat and Memento"}], max_tokens=5,
        stream=True, stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(final) == 1
    recommendations = final[0].model_extra["recommendations"]
    assert len(recommendations) == 5 and all(r["title"] in text for r in recommendations)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens <= 5
    assert len({c.id for c in chunks}) == 1 and len({c.model_extra["session_id"] for c in chunks}) == 1


def test_raw_sse_format(base_url):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Toy Story"}], "stream": True, "max_tokens": 2}
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-session-id"]
        events = [line for line in response.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"


def test_openai_style_errors(client, base_url):
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=[])
    assert bad.value.status_code == 400
    assert bad.value.body["type"] == "invalid_request_error" and bad.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as too_hot:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], temperature=9)
    assert too_hot.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x" * 5000}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], n=2)
    with pytest.raises(openai.NotFoundError) as wrong_model:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert wrong_model.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError) as no_session:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], extra_body={"session_id": "missing"}
        )
    assert no_session.value.body["code"] == "session_not_found"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{base_url}/v1", api_key="wrong", max_retries=0).models.list()

    raw = httpx.post(f"{base_url}/v1/chat/completions", content=b"{not json", timeout=10,
                     headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert raw.status_code == 400 and set(raw.json()["error"]) == {"message", "type", "param", "code"}
    huge = httpx.post(f"{base_url}/v1/chat/completions", content=b"x" * 300_000, timeout=10,
                      headers={"Authorization": f"Bearer {KEY}"})
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "request_too_large"
    unknown = httpx.get(f"{base_url}/v1/nope", headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert unknown.status_code == 404 and "error" in unknown.json()


def test_models_and_health(client, base_url):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert httpx.get(f"{base_url}/health", timeout=10).json() == {"status": "ok"}


def test_health_reports_a_closed_engine(catalogue, recommender, soft_table, tiny_llm):
    from fastapi.testclient import TestClient

    from serving.engines.transformers import TransformersEngine
    from serving.service import ChatService
    from serving.session_store import InMemorySessionStore

    engine = TransformersEngine(*tiny_llm)
    app = build_app(ChatService(catalogue, recommender, soft_table, engine, InMemorySessionStore()), MODEL)
    with TestClient(app) as http:
        assert http.get("/health").status_code == 200
        engine.close()
        unhealthy = http.get("/health")
        assert unhealthy.status_code == 503 and unhealthy.json()["error"]["code"] == "engine_unavailable"
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Heat"}]}
        closed = http.post("/v1/chat/completions", json=body)
        assert closed.status_code == 503


def test_error_mapping_never_leaks_internals():
    internal = create_error_response(RuntimeError("secret path /etc/passwd"))
    assert internal.status_code == 500 and "secret" not in internal.error.message
    assert internal.model_dump() == {"error": {"message": "Internal server error", "type": "internal_server_error",
                                               "param": None, "code": None}}
    invalid = create_error_response(InvalidRequestError("bad top_p", param="top_p"))
    assert (invalid.status_code, invalid.error.param, invalid.error.type) == (400, "top_p", "invalid_request_error")
    assert create_error_response(UnknownSessionError("gone")).status_code == 404
    assert create_error_response(NotImplementedError("tools")).status_code == 501
    try:
        ChatCompletionRequest.model_validate({"model": MODEL, "messages": [], "top_p": 0})
    except ValueError as exc:
        validation = create_error_response(RequestValidationError(exc.errors()))
    assert validation.status_code == 400 and validation.error.message.endswith("(and 1 more problem(s))")
