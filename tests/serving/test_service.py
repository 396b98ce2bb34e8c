"""ChatService end to end on the tiny LLM, the trained recommender and random soft tokens."""

from __future__ import annotations

import numpy as np
import pytest

from serving.api.protocol import ChatMessage
from serving.conversation_prior import dialogue_statistics
from serving.dialogue import DialogueState, candidates, update_state
from serving.engines.base import SamplingParams
from serving.errors import ConfigurationError, InvalidRequestError, ServingError, UnknownSessionError
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


def test_the_reply_opens_with_the_dialogue_managers_clause_which_streams_first(service):
    events = list(service.chat_stream(None, [user("I loved Heat and Memento")]))
    turn = events[-1]
    assert events[0] == "Since you liked Heat and Memento," and turn.reply.startswith(events[0] + " ")
    darker = list(service.chat_stream(turn.session_id, [user("something darker please")]))
    assert darker[0] == "For something darker," and darker[-1].reply.startswith("For something darker, ")
    follow_up = list(service.chat_stream(turn.session_id, [user("another one")]))
    assert follow_up[0] == "Since you liked Heat and Memento,"
    history = [user("I loved Heat and Memento"), ChatMessage(role="assistant", content=turn.reply),
               user("something darker please")]
    assert list(service.chat_stream(None, history))[0] == "For something darker,", "the same from a history"
    cold = service.chat(None, [user("what should I watch tonight?")])
    assert cold.reply.startswith("To start you off, ")


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
    assert all(0 < r.first_token_ms <= r.latency_ms for r in records)
    assert records[0].candidates[: len(records[0].recommendations)] == records[0].recommendations
    assert len(records[0].candidates) > len(records[0].recommendations), "the ranking the picks head"


def next_picks(service: ChatService, state: DialogueState, text: str) -> list[int]:
    """What the next turn must recommend from `state` after reading `text`."""
    read = update_state(state, text, service.linker, service.catalogue)
    return candidates(read, service.recommender, service.catalogue, service.config.n_recommendations,
                      popularity=service.popularity, config=service.config.ranking)


def test_thumbs_up_at_cold_start_personalises_the_next_turn(service, catalogue):
    first = service.chat(None, [user("something funny")])
    assert first.state.liked == []
    pick = first.recommendations[0].item_id
    state = service.feedback(first.session_id, pick, "like")
    assert state.liked == [pick] and service.store.get(first.session_id) == state
    second = service.chat(first.session_id, [user("more please")])
    assert [r.item_id for r in second.recommendations] == next_picks(service, state, "more please")
    assert pick not in {r.item_id for r in second.recommendations}
    assert any(catalogue[pick].display_title in r.reason for r in second.recommendations)
    assert second.state.liked == [pick], "feedback survives the turn"


def test_thumbs_down_not_interested_and_seen_shape_the_next_turn(service):
    first = service.chat(None, [user("I loved Toy Story")])
    shown = [r.item_id for r in first.recommendations]
    service.feedback(first.session_id, shown[0], "dislike")
    service.feedback(first.session_id, shown[1], "not_interested")
    unseen_top = next_picks(service, service.store.get(first.session_id), "what else?")[0]
    state = service.feedback(first.session_id, unseen_top, "seen")
    assert state.disliked == shown[:2] and state.seen == [unseen_top]
    second = service.chat(first.session_id, [user("what else?")])
    picks = [r.item_id for r in second.recommendations]
    assert picks == next_picks(service, state, "what else?")
    assert unseen_top not in picks and not set(picks) & set(shown)


def test_feedback_errors(service, catalogue):
    first = service.chat(None, [user("I loved Toy Story")], owner="key-a")
    item = first.recommendations[0].item_id
    with pytest.raises(UnknownSessionError):
        service.feedback("no-such-session", item, "like")
    with pytest.raises(UnknownSessionError):
        service.feedback(first.session_id, item, "like", owner="key-b")
    with pytest.raises(InvalidRequestError, match="kind"):
        service.feedback(first.session_id, item, "love", owner="key-a")
    with pytest.raises(InvalidRequestError, match="catalogue"):
        service.feedback(first.session_id, max(catalogue.ids) + 1, "like", owner="key-a")
    with pytest.raises(InvalidRequestError):
        service.feedback("bad id!", item, "like")
    assert service.store.get(first.session_id) == first.state, "a refused verdict changes nothing"


def test_stored_session_and_its_cards_can_be_shown_again(service):
    first = service.chat(None, [user("I loved Toy Story")])
    second = service.chat(first.session_id, [user("not animated")])
    stored = service.session(first.session_id)
    assert [t.user for t in stored.turns] == ["I loved Toy Story", "not animated"]
    assert [t.reply for t in stored.turns] == [first.reply, second.reply]
    assert service.describe(stored.turns[-1].recommended, stored.state) == second.recommendations
    with pytest.raises(UnknownSessionError):
        service.session(first.session_id, owner="someone-else")


def test_a_liked_movie_is_never_its_own_reason(service, catalogue):
    turn = service.chat(None, [user("I loved Toy Story")])
    pick = turn.recommendations[0].item_id
    state = service.feedback(turn.session_id, pick, "like")
    (again,) = service.describe([pick], state)
    assert catalogue[pick].display_title not in again.reason and again.reason
    assert "with Toy Story (1995)" in again.reason or "Shares" not in again.reason


def test_feedback_through_redis_reaches_another_replica(catalogue, recommender, soft_table, engine, redis_url):
    from serving.config import ServingConfig
    from serving.redis_store import RedisSessionStore

    one, two = (ChatService(catalogue, recommender, soft_table, engine, RedisSessionStore(redis_url),
                            ServingConfig(reply_max_tokens=8)) for _ in range(2))
    first = one.chat(None, [user("I loved Toy Story")])
    pick = first.recommendations[0].item_id
    one.feedback(first.session_id, pick, "dislike")
    assert two.session(first.session_id).state.disliked == [pick]
    with pytest.raises(UnknownSessionError):
        two.feedback("never-created", pick, "like")
    assert two.store.load("never-created") is None, "a refused verdict creates no session"


def test_close_waits_for_a_cut_short_replys_generation_then_closes_the_engine(catalogue, recommender, soft_table,
                                                                               tiny_llm):
    from serving.engines.transformers import TransformersEngine
    from serving.session_store import InMemorySessionStore

    service = ChatService(catalogue, recommender, soft_table, TransformersEngine(*tiny_llm), InMemorySessionStore())
    stream = service.chat_stream(None, [user("I loved Toy Story")])
    next(stream)
    stream.close()  # its generation worker may still be decoding
    service.close()
    assert not service.engine.health()
    with pytest.raises(ServingError, match="closed"):
        service.chat(None, [user("I loved Toy Story")])


def test_a_pick_sharing_no_genre_with_the_liked_movies_is_credited_to_them_not_to_popularity(service, catalogue):
    liked = next(m for m in catalogue if m.genres)
    other = next(m for m in catalogue if m.genres and not set(m.genres) & set(liked.genres))
    state = DialogueState(liked=[liked.item_id], mentioned=[liked.item_id])
    (reason,) = [r.reason for r in service.describe([other.item_id], state)]
    assert reason == f"People who liked {liked.display_title} liked it too"
    (cold,) = [r.reason for r in service.describe([other.item_id], DialogueState())]
    assert cold.startswith("A popular")


def test_of_two_liked_movies_sharing_as_many_genres_the_closer_one_is_cited(service, catalogue):
    def overlap(a, b):
        shared, union = set(a.genres) & set(b.genres), set(a.genres) | set(b.genres)
        return len(shared), len(shared) / len(union)

    movies = [m for m in catalogue if m.genres]
    cases = [(first, second, pick) for first in movies for second in movies for pick in movies
             if len({first.item_id, second.item_id, pick.item_id}) == 3
             and overlap(pick, first)[0] == overlap(pick, second)[0] > 0
             and overlap(pick, second)[1] > overlap(pick, first)[1]]
    assert cases, "the synthetic catalogue should hold such a triple"
    first, second, pick = cases[0]
    state = DialogueState(liked=[first.item_id, second.item_id], mentioned=[first.item_id, second.item_id])
    (reason,) = [r.reason for r in service.describe([pick.item_id], state)]
    assert f"with {second.display_title}" in reason and first.display_title not in reason


def test_the_collaborative_reason_names_the_liked_movies(service, catalogue):
    liked = [m for m in catalogue if m.genres and "Drama" in m.genres][:2]
    other = next(m for m in catalogue if m.genres and not set(m.genres) & (set(liked[0].genres) | set(liked[1].genres)))
    state = DialogueState(liked=[m.item_id for m in liked], mentioned=[m.item_id for m in liked])
    (reason,) = [r.reason for r in service.describe([other.item_id], state)]
    assert reason == f"People who liked {liked[0].display_title} and {liked[1].display_title} liked it too"


def test_logged_dialogues_lead_cold_start_and_weigh_in_with_likes(catalogue, recommender, soft_table, engine):
    from serving.config import RankingConfig, ServingConfig
    from serving.session_store import InMemorySessionStore

    talked_about = [14, 17]  # Memento, Heat (1995)
    conversation = dialogue_statistics([[14]] * 30 + [[17]] * 20, catalogue)
    config = ServingConfig(reply_max_tokens=4, ranking=RankingConfig(prior_weight=50.0))
    with_prior = ChatService(catalogue, recommender, soft_table, engine, InMemorySessionStore(), config,
                             conversation=conversation)
    plain = ChatService(catalogue, recommender, soft_table, engine, InMemorySessionStore(), config)
    cold = with_prior.chat(None, [user("hi, any ideas?")])
    cold_ids = [r.item_id for r in cold.recommendations]
    assert cold_ids[0] == talked_about[0] and talked_about[1] in cold_ids, "genre diversity may move the second"
    assert not set(talked_about) & {r.item_id for r in plain.chat(None, [user("hi, any ideas?")]).recommendations}
    liked = with_prior.chat(None, [user("I loved Toy Story")])
    assert set(talked_about) <= {r.item_id for r in liked.recommendations}, "a heavy prior outweighs the CF"


def test_movies_named_beside_a_liked_one_in_logged_dialogues_come_first(catalogue, recommender, soft_table, engine):
    from serving.config import RankingConfig, ServingConfig
    from serving.session_store import InMemorySessionStore

    toy_story, memento, heat = 1, 14, 17
    conversation = dialogue_statistics([[toy_story, memento]] * 3 + [[heat]] * 5, catalogue)
    config = ServingConfig(reply_max_tokens=4, ranking=RankingConfig(prior_weight=0.0, co_mention_weight=10.0))
    service = ChatService(catalogue, recommender, soft_table, engine, InMemorySessionStore(), config,
                          conversation=conversation)
    turn = service.chat(None, [user("I loved Toy Story")])
    assert turn.recommendations[0].item_id == memento
    plain = ChatService(catalogue, recommender, soft_table, engine, InMemorySessionStore(), config)
    assert plain.chat(None, [user("I loved Toy Story")]).recommendations[0].item_id != memento


def test_word_cues_from_logged_dialogues_reach_the_ranking_when_switched_on(catalogue, recommender, soft_table,
                                                                            engine):
    from serving.config import RankingConfig, ServingConfig
    from serving.conversation_prior import word_cues
    from serving.session_store import InMemorySessionStore

    zodiac = 19
    logged = dialogue_statistics([[1]] * 3, catalogue)
    conversation = type(logged)(logged.counts, logged.co_mentions,
                                word_cues([(["anything with gyllenhaal in it"], [zodiac])] * 3
                                          + [(["a fun family movie"], [1])] * 3, catalogue))

    def first_pick(weight: float) -> int:
        config = ServingConfig(reply_max_tokens=4, ranking=RankingConfig(prior_weight=0.0, cue_weight=weight))
        service = ChatService(catalogue, recommender, soft_table, engine, InMemorySessionStore(), config,
                              conversation=conversation)
        return service.chat(None, [user("something with Gyllenhaal")]).recommendations[0].item_id

    assert first_pick(10.0) == zodiac and first_pick(0.0) != zodiac
