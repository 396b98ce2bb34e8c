"""The systems under evaluation, on the synthetic catalogue, the briefly trained recommender and the tiny LLM.

Catalogue ids (tests/synthetic.py): Toy Story 1, Finding Nemo 2, Memento 14, Usual Suspects 16, Heat 17,
Blade Runner 32.
"""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import torch

from app.evaluation.importers import RecordedOutput, Utterance
from app.evaluation.systems import (
    COLD_START_MESSAGE,
    DialogueConfig,
    DialogueSystem,
    EndpointSystem,
    FusionConfig,
    FusionSystem,
    LoggedSystem,
    PopularitySystem,
    RetrievalConfig,
    RetrievalSystem,
    SystemContext,
    SystemFailure,
    TextLLMSystem,
    _clean_name,
    read_titles,
)
from retrieval.recommender import PopularityRecommender
from serving.linking import TitleLinker
from tests.serving.conftest import catalogue, engine, movielens, recommender, service, soft_table, tiny_llm  # noqa: F401


@pytest.fixture(scope="module")
def linker(catalogue):  # noqa: F811
    return TitleLinker(catalogue)


def _context(*turns: tuple[str, str, list[int]], recorded: RecordedOutput | None = None) -> SystemContext:
    utterances = [Utterance(role=role, text=text, mentions=mentions) for role, text, mentions in turns]
    return SystemContext(dialogue_id="d", turn_id="1", utterances=utterances, recorded=recorded)


LIKES_TOY_STORY = _context(("user", "I loved Toy Story (1995)", [1]), ("assistant", "Try Finding Nemo", [2]),
                           ("user", "Something else?", []))


def test_named_titles_and_out_of_catalogue_names(linker):
    text = (
        'Here are some picks:\n1. Heat (1995): crime\n2. Blade Runner 2049 (2017): sci-fi\n'
        'Also "Memento" is great, and so is Made Up Film (2001).'
    )
    titles = read_titles(text, linker)
    assert titles.named == ["Heat (1995)", "Blade Runner 2049 (2017)", "Memento", "Made Up Film (2001)"]
    assert titles.unresolved == ["Blade Runner 2049 (2017)", "Made Up Film (2001)"]
    # "Blade Runner" and "Up" inside names that are not catalogue movies do not count as mentions
    assert titles.item_ids == [17, 14]
    assert read_titles("Hello there, what do you like?", linker).model_dump() == {"named": [], "unresolved": [], "item_ids": []}


def test_chat_messages_end_with_the_user(linker):
    assert LIKES_TOY_STORY.chat_messages()[-1] == {"role": "user", "content": "Something else?"}
    opened_by_recommender = _context(("assistant", "Hi! What do you like?", []))
    assert opened_by_recommender.chat_messages()[-1] == {"role": "user", "content": COLD_START_MESSAGE}
    assert LIKES_TOY_STORY.mentioned_ids(("user",)) == [1]


def test_popularity(catalogue):  # noqa: F811
    counts = np.arange(len(catalogue), dtype=np.float64)  # the last movie is the most popular
    out = PopularitySystem(PopularityRecommender(catalogue, counts)).recommend(LIKES_TOY_STORY, 3)
    assert out.item_ids == [40, 39, 38]
    mentions_popular = _context(("user", "I loved the most popular one", [40]), ("user", "more?", [38]))
    assert PopularitySystem(PopularityRecommender(catalogue, counts)).recommend(mentions_popular, 3).item_ids == [39, 37, 36]


def test_retrieval_folds_in_the_mentions(recommender):  # noqa: F811
    out = RetrievalSystem(recommender).recommend(LIKES_TOY_STORY, 5)
    unfiltered = [int(i) for i in recommender.recommend([1, 2], 7, filter_history=False)[0]]
    assert out.item_ids == [i for i in unfiltered if i not in (1, 2)][:5]  # mentioned movies never come back
    user_only = RetrievalSystem(recommender, RetrievalConfig(roles=("user",))).recommend(LIKES_TOY_STORY, 5)
    unfiltered = [int(i) for i in recommender.recommend([1], 7, filter_history=False)[0]]
    assert user_only.item_ids == [i for i in unfiltered if i not in (1, 2)][:5]  # Nemo, mentioned, stays out
    cold = RetrievalSystem(recommender).recommend(_context(("user", "hello", [])), 3)
    assert cold.item_ids == [int(i) for i in recommender.popularity.recommend([], 3, filter_history=False)[0]]


@pytest.fixture(scope="module")
def tiny_ilm(recommender):  # noqa: F811
    from ilm_model.configuration import ILMConfig, QFormerConfig
    from ilm_model.modeling import ItemLanguageModel

    torch.manual_seed(0)
    qformer = QFormerConfig(text_encoder=None, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, num_query_tokens=2, cf_token_size=32, embed_dim=16)
    config = ILMConfig(qformer=qformer).for_data(recommender.item_embeddings().shape[1], 256)
    return ItemLanguageModel(config).eval()


def test_fusion_adds_standardised_cf_and_text_scores(recommender, tiny_ilm):  # noqa: F811
    system = FusionSystem(recommender, tiny_ilm, FusionConfig(cf_weight=2.0, text_weight=1.0, user_turns=1))
    out = system.recommend(LIKES_TOY_STORY, 5)
    items = recommender.item_embeddings()
    cf = items @ recommender.fold_in([1, 2])
    with torch.no_grad():
        text = tiny_ilm.encode_text(["Something else?"])[0]
        itc = (tiny_ilm.encode_items(torch.from_numpy(items)) @ text).amax(dim=1).numpy()

    def z(x):
        return (x - x.mean()) / x.std()

    expected = [int(i) for i in recommender.catalogue.ids[np.argsort(-(2.0 * z(cf) + z(itc)), kind="stable")]]
    assert out.item_ids == [i for i in expected if i not in (1, 2)][:5]
    text_only = system.recommend(_context(("user", "a dark thriller", [])), 3)
    with torch.no_grad():
        itc = (tiny_ilm.encode_items(torch.from_numpy(items)) @ tiny_ilm.encode_text(["a dark thriller"])[0]).amax(1)
    assert text_only.item_ids == [int(i) for i in recommender.catalogue.ids[np.argsort(-itc.numpy(), kind="stable")[:3]]]


def test_dialogue_system_runs_the_chat_service(service, catalogue, tmp_path):  # noqa: F811
    from serving.session_log import SessionLogWriter

    service.session_log = SessionLogWriter(tmp_path / "sessions.jsonl")
    out = DialogueSystem(service, DialogueConfig(fill=False)).recommend(LIKES_TOY_STORY, 50)
    assert (tmp_path / "sessions.jsonl").read_text() == ""  # replayed turns are not logged as served ones
    assert 0 < len(out.item_ids) <= service.config.n_recommendations
    assert all(i in catalogue for i in out.item_ids)
    assert out.reply is not None
    listed = [catalogue[i].display_title for i in out.item_ids]
    assert set(listed) <= set(out.named_titles)
    assert not set(listed) & set(out.unresolved_titles)

    filled = DialogueSystem(service).recommend(LIKES_TOY_STORY, 12)
    assert filled.item_ids[: len(out.item_ids)] == out.item_ids  # greedy: the same reply, then the ranker's next
    assert len(filled.item_ids) == 12 and len(set(filled.item_ids)) == 12
    assert all(i in catalogue for i in filled.item_ids) and not {1, 2} & set(filled.item_ids)


def test_text_llm_prompt_and_parsing(engine, recommender, catalogue, linker):  # noqa: F811
    system = TextLLMSystem(engine, RetrievalSystem(recommender), catalogue, linker)
    prompt = system.prompt(LIKES_TOY_STORY, [17, 16])
    assert "User: I loved Toy Story (1995)\nRecommender: Try Finding Nemo\nUser: Something else?" in prompt
    assert "1. Heat (1995)\n2. Usual Suspects, The (1995)" in prompt
    assert system._resolve("I would pick Heat (1995)!", [17, 16]) == 17
    assert system._resolve("The Usual Suspects", [17, 16]) == 16
    assert system._resolve("Memento", [17, 16]) == 14  # not a candidate, but a catalogue movie
    assert system._resolve("Some Unknown Film", [17, 16]) is None
    assert _clean_name('The user should watch the movie "Heat" (1995).\nMore') == "Heat"
    assert _clean_name("1. **Memento**") == "Memento" and _clean_name("1. Heat (1995).") == "Heat (1995)"

    out = system.recommend(LIKES_TOY_STORY, 12)
    candidates = RetrievalSystem(recommender).recommend(LIKES_TOY_STORY, 12).item_ids
    assert out.reply is not None and len(out.named_titles) <= 1
    if out.unresolved_titles or not out.named_titles:  # the tiny random LLM rarely names a real movie
        assert out.item_ids == candidates
    else:
        assert out.item_ids[1:] == [i for i in candidates if i != out.item_ids[0]][:11]


def _mock_client(payload: dict | None, status: int = 200) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)
        assert sent["messages"][-1] == {"role": "user", "content": "Something else?"}
        assert sent["temperature"] == 0.0
        return httpx.Response(status, json=payload or {"error": {"message": "boom"}})

    return httpx.Client(transport=httpx.MockTransport(handler))


def _completion(reply: str, **extra) -> dict:
    return {
        "id": "c1", "object": "chat.completion", "created": 0, "model": "ilmrec",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
        **extra,
    }


def test_endpoint_reads_the_recommendations_extra(linker):
    payload = _completion("Try these.", recommendations=[{"item_id": 17, "title": "Heat"}, {"item_id": 16}])
    system = EndpointSystem("http://test/v1", linker, http_client=_mock_client(payload))
    out = system.recommend(LIKES_TOY_STORY, 10)
    assert out.item_ids == [17, 16] and out.reply == "Try these."


def test_endpoint_falls_back_to_titles_in_the_reply(linker):
    payload = _completion("You could watch Heat (1995) or Memento (2000), or Made Up Film (2001).")
    out = EndpointSystem("http://test/v1", linker, http_client=_mock_client(payload)).recommend(LIKES_TOY_STORY, 10)
    assert out.item_ids == [17, 14]
    assert out.unresolved_titles == ["Made Up Film (2001)"]


def test_endpoint_errors_become_failures(linker):
    system = EndpointSystem("http://test/v1", linker, http_client=_mock_client(None, status=500))
    with pytest.raises(SystemFailure, match="http://test/v1"):
        system.recommend(LIKES_TOY_STORY, 10)


def test_logged_system_replays_what_was_served(linker):
    recorded = RecordedOutput(recommendations=[16, 39], reply="1. Heat (1995): crime", latency_ms=42.0)
    out = LoggedSystem(linker).recommend(_context(("user", "hi", []), recorded=recorded), 1)
    assert (out.item_ids, out.latency_ms, out.named_titles) == ([16], 42.0, ["Heat (1995)"])
    with pytest.raises(ValueError, match="--log"):
        LoggedSystem(linker).recommend(LIKES_TOY_STORY, 1)


def test_endpoint_against_our_live_api(live_app, tiny_settings):
    service = live_app.service
    system = EndpointSystem(f"{live_app.url}/v1", TitleLinker(service.catalogue), model=tiny_settings.server.model_name)
    out = system.recommend(LIKES_TOY_STORY, 10)
    assert out.item_ids and all(i in service.catalogue for i in out.item_ids)
    assert not {1, 2} & set(out.item_ids), "movies mentioned in the dialogue are not recommended again"
    shown = [service.catalogue[i].display_title for i in out.item_ids]
    assert all(title in out.reply for title in shown), "the ids are the ones the reply lists"


def test_our_own_reply_format_names_only_catalogue_movies(linker):
    """The chat service's list ("n. Title (Year): reason") with titles holding colons and reasons naming liked
    movies after capitalised genres: every name is a catalogue movie."""
    text = ("Since you loved Toy Story, here are a few.\n"
            "1. Terminator 2: Judgment Day (1991): Action, Sci-Fi; shares Action and Sci-Fi with Heat (1995).\n"
            "2. Memento (2000): Mystery, Thriller; people who liked Toy Story (1995) also liked it.\n"
            "3. Lion King, The (1994): Shares Animation with Toy Story (1995); Drama and Musical with Lion King, The (1994)")
    titles = read_titles(text, linker)
    assert titles.named == ["Terminator 2: Judgment Day (1991)", "Heat (1995)", "Memento (2000)", "Toy Story (1995)",
                            "Lion King, The (1994)", "Toy Story (1995)", "Lion King, The (1994)"]
    assert titles.unresolved == []
