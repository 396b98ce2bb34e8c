"""ChatService end to end on the tiny LLM, the trained recommender and random soft tokens."""

from __future__ import annotations

import pytest

from serving.api.protocol import ChatMessage
from serving.engines.base import SamplingParams
from serving.errors import ConfigurationError, InvalidRequestError, UnknownSessionError
from serving.service import ChatService, ChatTurn


def user(text: str) -> ChatMessage:
    return ChatMessage(role="user", content=text)


def test_three_turn_conversation(service, catalogue):
    first = service.chat(None, [user("I loved Toy Story and Finding Nemo")])
    darker = service.chat(first.session_id, [user("something darker")])
    last = service.chat(first.session_id, [user("not animated")])
    mentioned = {m.item_id for m in catalogue if m.title in ("Toy Story", "Finding Nemo")}
    assert set(first.state.liked) == mentioned
    seen: set[int] = set()
    for turn in (first, darker, last):
        ids = [r.item_id for r in turn.recommendations]
        assert len(ids) == 5 and all(i in catalogue for i in ids)
        assert not set(ids) & mentioned
        assert not set(ids) & seen, "nothing is recommended twice"
        seen |= set(ids)
        for rec in turn.recommendations:
            movie = catalogue[rec.item_id]
            assert (rec.title, rec.year, tuple(rec.genres)) == (movie.title, movie.year, movie.genres)
            assert rec.reason and movie.display_title in turn.reply
        assert turn.usage.prompt_tokens > 0 and turn.usage.completion_tokens >= 1
    assert darker.state.mood == "darker" and last.state.exclude_genres == ["Animation"]
    assert not any("Animation" in r.genres for r in last.recommendations)
    assert "Shares" in first.recommendations[0].reason
    assert set(last.state.recommended) == seen
    history = service.store.history(first.session_id)
    assert [t.user for t in history] == ["I loved Toy Story and Finding Nemo", "something darker", "not animated"]


def test_stream_yields_deltas_then_the_turn(service):
    stream = service.chat_stream(None, [user("I loved Heat and Memento")], SamplingParams(max_tokens=4))
    assert stream.session_id
    events = list(stream)
    assert isinstance(events[-1], ChatTurn) and all(isinstance(e, str) for e in events[:-1])
    turn = events[-1]
    assert "".join(events[:-1]) == turn.reply and turn.session_id == stream.session_id
    assert turn.usage.completion_tokens <= 4
    assert service.store.get(turn.session_id).recommended == [r.item_id for r in turn.recommendations]


def test_history_without_session_rebuilds_the_state(service, catalogue):
    first = service.chat(None, [user("I loved Toy Story and Finding Nemo")])
    history = [
        user("I loved Toy Story and Finding Nemo"),
        ChatMessage(role="assistant", content=first.reply),
        user("not animated"),
    ]
    rebuilt = service.chat(None, history)
    assert rebuilt.session_id != first.session_id
    assert rebuilt.state.liked == first.state.liked
    assert rebuilt.state.exclude_genres == ["Animation"] and rebuilt.state.turn == 2
    first_ids = {r.item_id for r in first.recommendations}
    assert first_ids <= set(rebuilt.state.recommended)
    assert not first_ids & {r.item_id for r in rebuilt.recommendations}


def test_closing_a_stream_early_saves_nothing_and_frees_the_engine(service):
    stream = service.chat_stream(None, [user("I loved Toy Story")])
    next(stream)
    stream.close()
    assert service.store.get(stream.session_id) is None
    assert service.chat(None, [user("I loved Toy Story")]).recommendations


def test_nothing_fits(service):
    turn = service.chat(None, [user("I loved Toy Story, something from 1900 to 1901, between 1900 and 1901")])
    assert turn.recommendations == [] and "relaxing" in turn.reply


def test_bad_requests(service):
    with pytest.raises(UnknownSessionError):
        service.chat("no-such-session", [user("hi")])
    with pytest.raises(InvalidRequestError):
        service.chat("bad id!", [user("hi")])
    with pytest.raises(InvalidRequestError):
        service.chat(None, [ChatMessage(role="assistant", content="hello")])
    with pytest.raises(InvalidRequestError):
        service.chat(None, [user("   ")])


def test_soft_tokens_must_fit_the_llm(catalogue, recommender, engine):
    import torch

    from ilm_model.soft_tokens import SoftTokenTable
    from serving.session_store import InMemorySessionStore

    narrow = SoftTokenTable(catalogue.ids, torch.zeros(len(catalogue), 2, 8))
    with pytest.raises(ConfigurationError):
        ChatService(catalogue, recommender, narrow, engine, InMemorySessionStore())
    partial = SoftTokenTable(catalogue.ids[:-1], torch.zeros(len(catalogue) - 1, 2, engine.hidden_size))
    with pytest.raises(ConfigurationError):
        ChatService(catalogue, recommender, partial, engine, InMemorySessionStore())


def test_completed_turns_go_to_the_session_log(catalogue, recommender, soft_table, engine, tmp_path):
    from serving.session_log import SessionLogRecord, SessionLogWriter
    from serving.session_store import InMemorySessionStore

    with SessionLogWriter(tmp_path / "sessions.jsonl") as log:
        service = ChatService(catalogue, recommender, soft_table, engine, InMemorySessionStore(),
                              session_log=log, model_id="tiny-llama", checkpoint_id="test")
        first = service.chat(None, [user("I loved Toy Story")])
        service.chat(first.session_id, [user("not animated")])
    records = [SessionLogRecord.model_validate_json(line) for line in
               (tmp_path / "sessions.jsonl").read_text().splitlines()]
    assert [r.turn for r in records] == [0, 1] and {r.session_id for r in records} == {first.session_id}
    assert records[0].mentions == first.state.liked
    assert records[0].recommendations == [r.item_id for r in first.recommendations]
    assert records[0].reply == first.reply and records[1].user_text == "not animated"
    assert records[0].model_id == "tiny-llama" and records[0].latency_ms > 0
