"""ITC text->item scores: max over the item's query features of the dot product with the text feature."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from serving.text_scores import ITCTextScorer


@pytest.fixture(scope="module")
def tiny_ilm(recommender):
    from ilm_model.configuration import ILMConfig, QFormerConfig
    from ilm_model.modeling import ItemLanguageModel

    torch.manual_seed(0)
    qformer = QFormerConfig(text_encoder=None, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, num_query_tokens=2, cf_token_size=32, embed_dim=16)
    config = ILMConfig(qformer=qformer).for_data(recommender.item_embeddings().shape[1], 256)
    return ItemLanguageModel(config).eval()


def test_scores_are_max_over_queries_of_itc_similarity(tiny_ilm, recommender, catalogue):
    scorer = ITCTextScorer(tiny_ilm, recommender, batch_size=7)
    scores = scorer.scores("a funny animated movie")
    assert scores.shape == (len(catalogue),) and scores.dtype == np.float64
    with torch.no_grad():
        items = tiny_ilm.encode_items(torch.from_numpy(recommender.item_embeddings()))  # [n, K, d]
        text = tiny_ilm.encode_text(["a funny animated movie"])[0]
    np.testing.assert_allclose(scores, (items @ text).amax(dim=1).numpy(), rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(scores) <= 1.0 + 1e-6), "both sides are L2-normalised"
    assert not np.allclose(scores, scorer.scores("a dark crime thriller"))


def test_the_service_fuses_the_scorer_into_its_ranking(tiny_ilm, recommender, catalogue, soft_table, engine):
    from serving.api.protocol import ChatMessage
    from serving.config import ServingConfig
    from serving.dialogue import candidates
    from serving.service import ChatService
    from serving.session_store import InMemorySessionStore

    scorer = ITCTextScorer(tiny_ilm, recommender)
    service = ChatService(catalogue, recommender, soft_table, engine, InMemorySessionStore(),
                          ServingConfig(reply_max_tokens=4, ranking={"text_weight": 1.0}), text_scorer=scorer)
    text = "I loved Toy Story, something funny"
    turn = service.chat(None, [ChatMessage(role="user", content=text)])
    expected = candidates(turn.state.model_copy(update={"recommended": []}), recommender, catalogue, 50,
                          popularity=service.popularity, text_scores=scorer.scores(text),
                          config=service.config.ranking)
    assert turn.ranked == expected and [r.item_id for r in turn.recommendations] == expected[:5]
    plain = ChatService(catalogue, recommender, soft_table, engine, InMemorySessionStore(),
                        ServingConfig(reply_max_tokens=4), text_scorer=scorer)
    assert plain.config.ranking.text_weight == 0.0, "off by default: it did not help on the ReDial tune split"
    assert plain.chat(None, [ChatMessage(role="user", content=text)]).ranked != turn.ranked
