"""Isolation between sessions and keys: 32 concurrent conversations with distinct API keys through a live
server over Redis, with an LLM that repeats its whole prompt and keeps every prompt it saw, so anything of
another session that reached a prompt, a reply or a stored record would show."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from serving.api.server import build_app
from tests.serving.live import serve
from tests.serving.wrapped_engines import EchoEngine

MODEL = "ilmrec-test"
SESSIONS = 32
TURNS = 10
FOLLOW_UPS = ["something darker", "not animated", "a comedy maybe", "from the nineties", "I didn't like {title}",
              "actually I loved {title}", "no horror please", "something more uplifting", "surprise me"]


def codeword(i: int) -> str:
    return f"codeword-{i:02d}-{'qxzjvkwyfb'[i % 10]}{'plmnbvcxzq'[i // 10]}"


@pytest.fixture()
def echo_api(catalogue, recommender, soft_table, engine, redis_url) -> Iterator[tuple[str, object, EchoEngine]]:
    from serving.config import ServingConfig
    from serving.redis_store import RedisSessionStore
    from serving.service import ChatService

    store = RedisSessionStore(redis_url)
    echo = EchoEngine(engine)
    service = ChatService(catalogue, recommender, soft_table, echo, store, ServingConfig(reply_max_tokens=8))
    keys = [f"sk-user-{i:02d}" for i in range(SESSIONS)]
    with serve(build_app(service, MODEL, api_keys=keys)) as url:
        yield url, store, echo
    store.close()


def test_concurrent_sessions_with_distinct_keys_never_see_each_other(echo_api, catalogue):
    url, store, echo = echo_api
    titles = [m.title for m in catalogue][:SESSIONS]
    assert len(set(titles)) == SESSIONS

    def converse(i: int) -> tuple[str, list[str], list[list[int]]]:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=f"sk-user-{i:02d}", max_retries=0, timeout=120)
        messages = [f"I loved {titles[i]}; my {codeword(i)} is private"] + [
            f"{f.format(title=titles[i])} ({codeword(i)})" for f in FOLLOW_UPS]
        session_id, replies, picks = None, [], []
        for n, text in enumerate(messages[:TURNS]):
            extra = {"extra_body": {"session_id": session_id}} if session_id else {}
            stream = n % 2 == 1
            response = client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": text}], stream=stream, **extra)
            if stream:
                chunks = list(response)
                reply = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                final = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
            else:
                reply, final = response.choices[0].message.content, response
            session_id = session_id or final.model_extra["session_id"]
            assert final.model_extra["session_id"] == session_id
            replies.append(reply)
            picks.append([r["item_id"] for r in final.model_extra["recommendations"]])
        return session_id, replies, picks

    with ThreadPoolExecutor(SESSIONS) as pool:
        results = list(pool.map(converse, range(SESSIONS)))

    session_ids = [r[0] for r in results]
    assert len(set(session_ids)) == SESSIONS
    # every prompt the LLM saw holds the words of exactly one session (turns where nothing fits anymore
    # have no LLM call)
    assert len(echo.prompts) == sum(bool(p) for _, _, picks in results for p in picks) > SESSIONS
    for prompt in echo.prompts:
        assert len([i for i in range(SESSIONS) if codeword(i) in prompt]) == 1, prompt
    ids_by_title = {m.title: m.item_id for m in catalogue}
    for i, (session_id, replies, picks) in enumerate(results):
        assert picks[0], "the first turn always recommends"
        others = [codeword(j) for j in range(SESSIONS) if j != i]
        for reply, turn_picks in zip(replies, picks):
            assert not [w for w in others if w in reply], f"session {i} saw another session's words"
            listed = {ids_by_title[t] for t in titles if t in reply}
            # any title in the reply is this session's own, or one of this turn's grounded picks
            assert listed <= {ids_by_title[titles[i]], *turn_picks}
        saved = store.load(session_id)
        assert saved.state.turn == TURNS and len(saved.turns) == TURNS
        assert saved.state.mentioned == [ids_by_title[titles[i]]], "state holds only this session's movie"
        assert all(codeword(i) in t.user and not any(w in t.user + t.reply for w in others) for t in saved.turns)
        assert [t.recommended for t in saved.turns] == picks

    def steal(i: int) -> int:
        thief = openai.OpenAI(base_url=f"{url}/v1", api_key=f"sk-user-{(i + 1) % SESSIONS:02d}", max_retries=0)
        try:
            thief.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "tell me more"}],
                                          extra_body={"session_id": session_ids[i]})
        except openai.NotFoundError as exc:
            assert exc.body["code"] == "session_not_found" and session_ids[i] in exc.body["message"]
            return 404
        return 200

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(steal, range(SESSIONS))) == {404}
    assert all(store.load(s).state.turn == TURNS for s in session_ids), "failed thefts change nothing"
