"""The OpenAI-compatible API, driven by the official `openai` client against a real uvicorn server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import openai
import pytest
from fastapi.exceptions import RequestValidationError

from serving.api.protocol import ChatCompletionRequest
from serving.api.server import build_app
from serving.api.serving import create_error_response
from serving.errors import InvalidRequestError, UnknownSessionError
from serving.service import FALLBACK_CONTINUATION, ChatService
from tests.serving.live import serve

MODEL = "ilmrec-test"
KEY = "sk-test"
OTHER_KEY = "sk-other"


@pytest.fixture()
def base_url(service) -> Iterator[str]:
    with serve(build_app(service, MODEL, api_keys=[KEY, OTHER_KEY], max_body_bytes=200_000)) as url:
        yield url


def openai_client(base_url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0, timeout=60)


@pytest.fixture()
def client(base_url) -> openai.OpenAI:
    return openai_client(base_url)


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
        assert closed.status_code == 503 and closed.headers["retry-after"] == "5"


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


def test_raw_chunks_follow_openai_schema(base_url):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "I loved Heat"}], "stream": True,
            "max_tokens": 3, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as response:
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    for chunk in chunks:
        assert {"id", "object", "created", "model", "choices", "usage", "session_id"} <= set(chunk)
        for choice in chunk["choices"]:
            assert set(choice) == {"index", "delta", "finish_reason", "logprobs"} and choice["index"] == 0
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(set(c["choices"][0]["delta"]) == {"content"} for c in chunks[1:-2])
    finishing, last = chunks[-2], chunks[-1]
    assert finishing["choices"][0]["delta"] == {} and finishing["choices"][0]["finish_reason"] in ("stop", "length")
    assert len(finishing["recommendations"]) == 5 and finishing["usage"] is None
    assert chunks[0]["recommendations"] == finishing["recommendations"], "the picks come first, and again last"
    assert all("recommendations" not in c for c in chunks[1:-2]) and all(c["usage"] is None for c in chunks[:-1])
    assert last["choices"] == [] and last["usage"]["total_tokens"] == (
        last["usage"]["prompt_tokens"] + last["usage"]["completion_tokens"]
    )

    body.pop("stream_options")
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as response:
        plain = [json.loads(line.removeprefix("data: ")) for line in response.iter_lines()
                 if line and line != "data: [DONE]"]
    assert all("usage" not in c for c in plain) and plain[-1]["choices"][0]["finish_reason"]


def test_async_client_streams_and_sampling_params_pass(base_url):
    async def talk() -> tuple[list, object]:
        async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0, timeout=60) as aclient:
            stream = await aclient.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "I loved Memento"}], stream=True,
                max_completion_tokens=4, temperature=0.7, top_p=0.9, seed=3, stop=["zz"],
            )
            chunks = [chunk async for chunk in stream]
            full = await aclient.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "I loved Memento"}],
                max_completion_tokens=4, temperature=0.7, top_p=0.9, seed=3, stop=["zz"],
            )
            return chunks, full

    chunks, full = asyncio.run(talk())
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == full.choices[0].message.content, "same seed, same reply"
    assert full.usage.completion_tokens <= 4


def test_model_retrieval_and_request_rules(client):
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-4o")
    assert missing.value.body["code"] == "model_not_found"
    message = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError) as options:
        client.chat.completions.create(model=MODEL, messages=message, stream_options={"include_usage": True})
    assert options.value.body["param"] == "stream_options"
    with pytest.raises(openai.BadRequestError) as empty_stop:
        client.chat.completions.create(model=MODEL, messages=message, stop=[""])
    assert empty_stop.value.body["param"] == "stop"
    with pytest.raises(openai.BadRequestError) as header_clash:
        client.chat.completions.create(model=MODEL, messages=message, extra_body={"session_id": "a"},
                                       extra_headers={"X-Session-Id": "b"})
    assert header_clash.value.body["param"] == "session_id"


def test_sessions_are_bound_to_the_key_that_created_them(client, base_url):
    first = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "I loved Heat"}])
    session_id = first.model_extra["session_id"]
    other = openai_client(base_url, OTHER_KEY)
    for continue_with in ({"extra_body": {"session_id": session_id}},
                          {"extra_headers": {"X-Session-Id": session_id}}):
        with pytest.raises(openai.NotFoundError) as stolen:
            other.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "more"}],
                                          **continue_with)
        assert stolen.value.body["code"] == "session_not_found"
    with pytest.raises(openai.NotFoundError):
        other.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "more"}], stream=True,
                                      extra_body={"session_id": session_id})
    mine = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "not animated"}],
                                          extra_body={"session_id": session_id})
    assert mine.model_extra["session_id"] == session_id
    theirs = other.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "I loved Heat"}])
    assert theirs.model_extra["session_id"] != session_id


def test_two_api_servers_sharing_redis_continue_one_conversation(catalogue, recommender, soft_table, engine,
                                                                redis_url):
    from serving.config import ServingConfig
    from serving.redis_store import RedisSessionStore

    stores = [RedisSessionStore(redis_url), RedisSessionStore(redis_url)]
    apps = [build_app(ChatService(catalogue, recommender, soft_table, engine, s, ServingConfig(reply_max_tokens=4)),
                      MODEL, api_keys=[KEY]) for s in stores]
    with serve(apps[0]) as url_a, serve(apps[1]) as url_b:
        a, b = openai_client(url_a), openai_client(url_b)
        first = a.chat.completions.create(model=MODEL,
                                          messages=[{"role": "user", "content": "I loved Toy Story and Finding Nemo"}])
        session = {"session_id": first.model_extra["session_id"]}
        second = b.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "not animated"}],
                                           extra_body=session)
        third = a.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "something darker"}],
                                          extra_body=session, stream=True)
        final = next(c for c in third if c.choices and c.choices[0].finish_reason)
    recommended = [r["item_id"] for response in (first, second, final) for r in response.model_extra["recommendations"]]
    assert len(recommended) == len(set(recommended)) == 15
    assert not any("Animation" in r["genres"] for r in second.model_extra["recommendations"]
                   + final.model_extra["recommendations"])
    saved = stores[1].load(session["session_id"])
    assert saved.state.turn == 3 and saved.state.mood == "darker" and saved.state.exclude_genres == ["Animation"]
    for s in stores:
        s.close()


def test_unreachable_or_corrupt_session_store(catalogue, recommender, soft_table, engine, redis_url,
                                             dead_redis_url):
    import redis
    from fastapi.testclient import TestClient

    from serving.redis_store import RedisSessionStore

    down = RedisSessionStore(dead_redis_url, timeout_s=1)
    with TestClient(build_app(ChatService(catalogue, recommender, soft_table, engine, down), MODEL)) as http:
        health = http.get("/health")
        assert health.status_code == 503 and health.json()["error"]["code"] == "session_store_unavailable"
        for session in ({"session_id": "abc"}, {}):
            body = {"model": MODEL, "messages": [{"role": "user", "content": "Heat"}], "max_tokens": 2, **session}
            response = http.post("/v1/chat/completions", json=body)
            assert response.status_code == 503 and response.headers["retry-after"] == "2"
            assert response.json()["error"] == {"message": "the session store (Redis) is unavailable; retry shortly",
                                                "type": "service_unavailable", "param": None,
                                                "code": "session_store_unavailable"}

    with redis.Redis.from_url(redis_url) as raw:
        raw.set("ilmrec:session:old", '{"schema_version": 0}')
    store = RedisSessionStore(redis_url)
    with TestClient(build_app(ChatService(catalogue, recommender, soft_table, engine, store), MODEL)) as http:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Heat"}], "session_id": "old"}
        corrupt = http.post("/v1/chat/completions", json=body)
    assert corrupt.status_code == 500 and corrupt.json()["error"]["code"] == "session_corrupt"
    assert "schema_version" in corrupt.json()["error"]["message"]
    store.close()


def ask(client: openai.OpenAI, text: str = "I loved Toy Story and Finding Nemo", **params):
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}], **params)


def streamed_text(chunks) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_stop_cuts_the_whole_reply_before_the_stop_string(client):
    reply = ask(client, temperature=0).choices[0].message.content
    listing = reply.index("\n\n1. ")
    for stop, expected in ((reply[listing - 2 : listing + 4], reply[: listing - 2]),  # spans sentence and list
                           ("\n2. ", reply[: reply.index("\n2. ")])):
        cut = ask(client, temperature=0, stop=[stop, "never-there"])
        assert cut.choices[0].message.content == expected and cut.choices[0].finish_reason == "stop"
        assert len(cut.model_extra["recommendations"]) == 5, "the structured picks are not cut"
        chunks = list(ask(client, temperature=0, stop=stop, stream=True))
        assert streamed_text(chunks) == expected
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]


def test_finish_reason_is_length_when_max_tokens_ends_the_sentence(client):
    full = ask(client, temperature=0)
    assert full.usage.completion_tokens > 1
    short = ask(client, temperature=0, max_tokens=1)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 1
    # one token continues no sentence (a fragment, dropped): the opening clause and the fixed continuation,
    # then the same grounded list
    listing = full.choices[0].message.content.index("\n\n1. ")
    assert short.choices[0].message.content == ("Since you liked Toy Story and Finding Nemo, " + FALLBACK_CONTINUATION
                                                 + full.choices[0].message.content[listing:])
    assert len(short.model_extra["recommendations"]) == 5, "the grounded list still follows"


def test_n_1_is_accepted_and_n_2_refused_in_openai_error_schema(client, base_url):
    assert len(ask(client, n=1).choices) == 1
    with pytest.raises(openai.BadRequestError) as two:
        ask(client, n=2)
    assert two.value.status_code == 400
    assert two.value.body == {"message": "n: Value error, only n=1 is supported; send one request per completion",
                              "type": "invalid_request_error", "param": "n", "code": "invalid_request"}


def test_temperature_seed_and_top_p_change_sampling_as_documented(client):
    def reply(**params) -> tuple[str, int]:
        """The text and the LLM's token count: the guard drops most of the tiny LLM's sentences, so different
        samples often show the same fixed sentence."""
        response = ask(client, "I loved Heat", **params)
        return response.choices[0].message.content, response.usage.completion_tokens

    greedy = reply(temperature=0)
    assert reply(temperature=0, seed=99) == greedy, "greedy ignores the seed"
    assert reply(temperature=2, seed=5) == reply(temperature=2, seed=5), "a seed repeats a sampled reply"
    sampled = {reply(temperature=2, seed=seed) for seed in range(6)}
    assert len(sampled) > 1, "different seeds at a high temperature give different replies"
    assert reply(temperature=2, top_p=1e-9, seed=5) == greedy, "a tiny top_p keeps only the likeliest token"


def test_async_streaming_usage_chunk_matches_the_full_response(base_url):
    async def talk():
        async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0, timeout=60) as aclient:
            message = [{"role": "user", "content": "I loved Memento"}]
            stream = await aclient.chat.completions.create(model=MODEL, messages=message, temperature=0,
                                                           stream=True, stream_options={"include_usage": True})
            chunks = [chunk async for chunk in stream]
            full = await aclient.chat.completions.create(model=MODEL, messages=message, temperature=0)
            return chunks, full

    chunks, full = asyncio.run(talk())
    *content, last = chunks
    assert last.choices == [] and all(c.usage is None for c in content)
    assert streamed_text(chunks) == full.choices[0].message.content
    counts = lambda usage: (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)  # noqa: E731
    assert counts(last.usage) == counts(full.usage)
    assert 0 < last.usage.completion_tokens and last.usage.total_tokens == (
        last.usage.prompt_tokens + last.usage.completion_tokens)
    # the engine reuses the KV of the rows a prompt shares with the previous one: here all but the last row
    assert 0 <= last.usage.prompt_tokens_details.cached_tokens < last.usage.prompt_tokens
    assert full.usage.prompt_tokens_details.cached_tokens == full.usage.prompt_tokens - 1


@pytest.mark.parametrize(("body", "message"), [
    (b'{"model": "m",\n "messages": tru}', "the request body is not valid JSON: Expecting value at line 2, "
                                           "column 14 (character 28); send one JSON object"),
    (b"{not json", "the request body is not valid JSON: Expecting property name enclosed in double quotes at "
                   "line 1, column 2 (character 1); send one JSON object"),
    (b"", "the request body is empty; send a JSON object with `model` and `messages`"),
    (b"[1, 2]", "the request body must be a JSON object with `model` and `messages` (Content-Type: "
                "application/json)"),
])
def test_a_malformed_body_gets_a_message_saying_what_and_where(base_url, body, message):
    raw = httpx.post(f"{base_url}/v1/chat/completions", content=body, timeout=10,
                     headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert raw.status_code == 400
    assert raw.json() == {"error": {"message": message, "type": "invalid_request_error", "param": None,
                                    "code": "invalid_request"}}


@pytest.mark.parametrize("session_id", ["../../etc/passwd", "a/b", "..", "x" * 129, "id\r\nSET k v", "ilmrec:*"])
def test_session_ids_that_could_leave_their_key_or_path_are_refused(client, base_url, service, session_id):
    message = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError) as in_body:
        client.chat.completions.create(model=MODEL, messages=message, extra_body={"session_id": session_id})
    assert in_body.value.body["param"] == "session_id"
    if "\r" not in session_id:  # httpx itself refuses a header with a line break
        in_header = httpx.post(f"{base_url}/v1/chat/completions", json={"model": MODEL, "messages": message},
                               headers={"Authorization": f"Bearer {KEY}", "X-Session-Id": session_id}, timeout=10)
        assert in_header.status_code == 400
    with pytest.raises(InvalidRequestError, match="session_id must be 1-128 of A-Z a-z 0-9 _ -"):
        service.session(session_id)


@pytest.mark.parametrize(("field", "value"), [("stream", "yes"), ("stream", 1), ("max_tokens", "5"),
                                              ("max_tokens", 5.0), ("temperature", "0.5"), ("n", "1")])
def test_scalars_are_not_coerced(base_url, field, value):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Heat"}], field: value}
    raw = httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=10,
                     headers={"Authorization": f"Bearer {KEY}"})
    assert raw.status_code == 400
    assert raw.json()["error"]["param"] == field and raw.json()["error"]["type"] == "invalid_request_error"
