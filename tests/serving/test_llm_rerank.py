"""LLM re-ranking: candidate title log-probs after the next-item prompt vs a full forward pass, and the fusion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ilm_model.configuration import Phase2Config
from serving.llm_rerank import LLM_ONLY, LLMReranker, fuse


@pytest.fixture(scope="module")
def reranker(tiny_llm, soft_table, catalogue) -> LLMReranker:
    return LLMReranker(*tiny_llm, soft_table, catalogue, Phase2Config(history_length=3))


def brute_force_score(reranker: LLMReranker, liked: list[int], item_id: int) -> float:
    """Mean log p(title tokens | whole prompt) from one uncached forward pass over prompt + answer; no liked
    items: the one-slot prompt with an empty slot."""
    llm, tokenizer = reranker.llm, reranker.tokenizer
    prompt = reranker.prompt(max(1, len(liked)))
    blocks = list(reranker.soft_tokens.lookup(liked)) if liked else [torch.zeros(0, reranker.soft_tokens.hidden_size)]
    body = prompt.embed_blocks(llm, blocks)
    answer = prompt.answer_ids(tokenizer, reranker.catalogue[item_id].display_title, 40)
    full = torch.cat([body, llm.get_input_embeddings()(torch.tensor(answer))])
    with torch.no_grad():
        logits = llm(inputs_embeds=full[None]).logits[0]
    log_probs = logits[len(body) - 1 : len(body) - 1 + len(answer)].log_softmax(-1)
    return float(log_probs[torch.arange(len(answer)), torch.tensor(answer)].mean())


def test_scores_match_a_full_forward_pass_per_candidate(reranker, catalogue):
    ids = [int(i) for i in catalogue.ids]
    liked, candidates = ids[:2], ids[5:25]
    scores = reranker.scores(liked, candidates)
    expected = [brute_force_score(reranker, liked, c) for c in candidates]
    assert scores.shape == (20,)
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)
    assert len(set(np.round(scores, 4))) > 10, "random LLM: titles get distinct scores"
    assert not np.allclose(scores, reranker.scores(ids[2:4], candidates)), "the liked items condition the scores"


def test_prior_scores_leave_the_history_slot_empty(reranker, catalogue):
    ids = [int(i) for i in catalogue.ids]
    candidates = ids[30:36]
    prior = reranker.prior_scores(candidates)
    np.testing.assert_allclose(prior, [brute_force_score(reranker, [], c) for c in candidates], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(reranker.prior_scores(candidates[::-1]), prior[::-1], rtol=1e-6)
    assert not np.allclose(prior, reranker.scores(ids[:1], candidates))


def test_only_the_most_recent_liked_items_enter_the_prompt(reranker, catalogue):
    ids = [int(i) for i in catalogue.ids]
    candidates = ids[10:16]
    assert reranker.history(ids[:5]) == ids[2:5]
    np.testing.assert_allclose(reranker.scores(ids[:5], candidates), reranker.scores(ids[2:5], candidates))


def test_fuse_is_z_rank_plus_weighted_z_llm():
    llm = np.array([-3.0, -1.0, -2.0, -0.5])
    # z(r) for r = 1, .75, .5, .25 is (1.342, .447, -.447, -1.342); z(llm) = (-1.432, .651, -.391, 1.172)
    np.testing.assert_array_equal(fuse(llm, 0.0), [0, 1, 2, 3])
    np.testing.assert_array_equal(fuse(llm, 0.5), [1, 0, 2, 3])  # .626, .773, -.642, -.756
    np.testing.assert_array_equal(fuse(llm, 2.0), [1, 3, 2, 0])  # -1.523, 1.749, -1.228, 1.002
    np.testing.assert_array_equal(fuse(llm, LLM_ONLY), [3, 1, 2, 0])
    np.testing.assert_array_equal(fuse(np.zeros(3), 1.0), [0, 1, 2]), "constant LLM scores keep the order"
    np.testing.assert_array_equal(fuse([-1.0, -1.0, -2.0], LLM_ONLY), [0, 1, 2]), "ties keep retrieval order"
    with pytest.raises(ValueError, match=">= 0"):
        fuse(llm, -1.0)


def test_rerank_reorders_the_candidates_by_the_fusion(reranker, catalogue):
    ids = [int(i) for i in catalogue.ids]
    liked, candidates = ids[:3], ids[20:30]
    scores = reranker.scores(liked, candidates)
    reranked = reranker.rerank(liked, candidates, LLM_ONLY)
    assert sorted(reranked) == sorted(candidates)
    assert reranked == [candidates[i] for i in np.argsort(-scores, kind="stable")]
    assert reranker.rerank(liked, candidates, 1.0) == [candidates[i] for i in fuse(scores, 1.0)]
    pmi = scores - reranker.prior_scores(candidates)
    assert reranker.rerank(liked, candidates, 1.0, calibrated=True) == [candidates[i] for i in fuse(pmi, 1.0)]


def test_without_liked_items_the_order_is_kept(reranker, catalogue):
    candidates = [int(i) for i in catalogue.ids[:8]]
    assert reranker.rerank([], candidates, LLM_ONLY) == candidates
    with pytest.raises(ValueError, match="at least one liked item"):
        reranker.scores([], candidates)
