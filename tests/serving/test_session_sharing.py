"""ChatService over both session stores: concurrent turns of one session, services sharing one Redis, owners."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from serving.api.protocol import ChatMessage
from serving.config import ServingConfig
from serving.errors import UnknownSessionError
from serving.service import ChatService, ChatTurn, TurnStream
from serving.session_store import SESSION_ID_PATTERN, InMemorySessionStore, SessionStore


def user(text: str) -> ChatMessage:
    return ChatMessage(role="user", content=text)


def drain(stream: TurnStream) -> ChatTurn:
    *_, turn = stream
    assert isinstance(turn, ChatTurn)
    return turn


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[SessionStore]:
    from serving.redis_store import RedisSessionStore

    store = InMemorySessionStore() if request.param == "memory" else RedisSessionStore(
        request.getfixturevalue("redis_url"))
    yield store
    store.close()


@pytest.fixture()
def make_service(catalogue, recommender, soft_table, engine):
    def make(store: SessionStore) -> ChatService:
        return ChatService(catalogue, recommender, soft_table, engine, store, ServingConfig(reply_max_tokens=4))

    return make


def test_overlapping_turns_of_one_session_are_both_kept(make_service, store, catalogue):
    service = make_service(store)
    first = service.chat(None, [user("I loved Toy Story and Finding Nemo")])
    # both turns read the session before either is saved
    not_animated = service.chat_stream(first.session_id, [user("not animated")])
    darker = service.chat_stream(first.session_id, [user("something darker")])
    turn_a, turn_b = drain(not_animated), drain(darker)

    saved = store.load(first.session_id)
    assert saved.revision == 3 and saved.state.turn == 3
    assert saved.state.exclude_genres == ["Animation"] and saved.state.mood == "darker"
    assert turn_b.state == saved.state, "the later turn reports the merged state"
    assert [t.user for t in saved.turns] == ["I loved Toy Story and Finding Nemo", "not animated", "something darker"]
    shown = [r.item_id for turn in (first, turn_a, turn_b) for r in turn.recommendations]
    assert set(saved.state.recommended) == set(shown)


def test_two_services_continue_each_others_session_through_redis(make_service, redis_url):
    from serving.redis_store import RedisSessionStore

    stores = [RedisSessionStore(redis_url), RedisSessionStore(redis_url)]
    one, two = (make_service(s) for s in stores)
    first = one.chat(None, [user("I loved Toy Story and Finding Nemo")])
    second = two.chat(first.session_id, [user("not animated")])
    third = one.chat(first.session_id, [user("something darker")])
    assert first.session_id == second.session_id == third.session_id
    assert third.state.turn == 3 and third.state.exclude_genres == ["Animation"] and third.state.mood == "darker"
    assert third.state.liked == first.state.liked
    ids = [r.item_id for turn in (first, second, third) for r in turn.recommendations]
    assert len(ids) == len(set(ids)) == 15, "neither process repeats what the other recommended"
    assert [t.user for t in two.store.history(first.session_id)] == [
        "I loved Toy Story and Finding Nemo", "not animated", "something darker"
    ]
    for s in stores:
        s.close()


def test_sessions_belong_to_their_owner(make_service, store):
    service = make_service(store)
    first = service.chat(None, [user("I loved Heat")], owner="key-a")
    assert store.load(first.session_id).owner == "key-a"
    for stranger in ("key-b", None):
        with pytest.raises(UnknownSessionError):
            service.chat(first.session_id, [user("more")], owner=stranger)
    assert service.chat(first.session_id, [user("more")], owner="key-a").state.turn == 2


def test_session_ids_are_unguessable_tokens(make_service, store):
    import re

    service = make_service(store)
    ids = {service.chat(None, [user("I loved Heat")]).session_id for _ in range(3)}
    assert len(ids) == 3
    assert all(re.fullmatch(SESSION_ID_PATTERN, i) and len(i) >= 22 for i in ids), "128 random bits or more"
