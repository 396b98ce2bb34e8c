import math

import numpy as np
import pytest
import torch

from retrieval.baselines import popularity_scores
from retrieval.catalogue import Catalogue, Movie
from retrieval.metrics import evaluate, ndcg_at_k, recall_at_k, summarize, top_rows
from retrieval.recommender import PopularityRecommender
from retrieval.splits import HeldOutUsers


def test_recall_is_normalised_by_min_k_and_targets():
    ranked = np.array([[5, 1, 7, 2], [0, 1, 2, 3]])
    targets = [np.array([1, 2]), np.array([9, 8, 7, 6, 3])]
    assert recall_at_k(ranked, targets, 2).tolist() == [0.5, 0.0]
    assert recall_at_k(ranked, targets, 4).tolist() == [1.0, 0.25]  # user 1: 1 hit / min(4, 5)


def test_ndcg_by_hand_and_perfect_ranking_scores_one():
    ranked = np.array([[5, 1, 7, 2]])
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3)
    assert ndcg_at_k(ranked, [np.array([1, 2])], 4)[0] == pytest.approx(dcg / idcg)
    assert ndcg_at_k(np.array([[3, 4, 0]]), [np.array([3, 4, 9, 8])], 2)[0] == pytest.approx(1.0)  # truncated IDCG


def test_summarize_mean_and_standard_error():
    estimate = summarize(np.array([0.0, 1.0, 1.0, 0.0]))
    assert estimate.mean == 0.5 and estimate.n_users == 4
    assert estimate.stderr == pytest.approx(np.std([0, 1, 1, 0], ddof=1) / 2)


def test_evaluate_excludes_fold_in_items_from_the_ranking():
    users = HeldOutUsers(np.array([1, 2]), [np.array([0, 1]), np.array([4])], [np.array([2]), np.array([3, 0])])

    def score_fn(bags):  # fold-in items score highest; targets come right after
        scores = torch.zeros(len(bags), 6)
        scores[0, [0, 1]], scores[0, 2] = 10.0, 5.0
        scores[1, 4], scores[1, [3, 0]] = 10.0, 5.0
        return scores

    result = evaluate(score_fn, users, recall_ks=(1, 2), ndcg_k=3)
    assert result["recall@1"].mean == 1.0  # user 2: 1 hit / min(1, 2 targets) = 1
    assert result["recall@2"].mean == 1.0
    assert result["ndcg@3"].mean == pytest.approx(1.0)
    assert set(result) == {"recall@1", "recall@2", "ndcg@3"}


def test_evaluate_batches_give_the_same_answer():
    rng = np.random.default_rng(0)
    users = HeldOutUsers(
        np.arange(9),
        [rng.choice(30, 5, replace=False) for _ in range(9)],
        [rng.choice(30, 3, replace=False) for _ in range(9)],
    )
    table = torch.from_numpy(rng.normal(size=(9, 30)).astype(np.float32))
    calls = iter(range(0, 9, 2))

    def score_fn(bags):
        start = next(calls)
        return table[start : start + len(bags)]

    batched = evaluate(score_fn, users, (5,), 10, batch_size=2)
    whole = evaluate(lambda bags: table, users, (5,), 10)
    assert batched == whole


def test_top_rows_breaks_ties_by_row_and_ranks_exclusions_last():
    scores = torch.tensor([[1.0, 3.0, 3.0, 0.0, 3.0], [2.0, 2.0, 2.0, 2.0, 2.0]])
    ranked = top_rows(scores, [np.array([2]), np.array([0, 1])], depth=5)
    assert ranked.tolist() == [[1, 4, 0, 3, 2], [2, 3, 4, 0, 1]]
    assert top_rows(scores, [np.array([], np.int64)] * 2, depth=2).tolist() == [[1, 2], [0, 1]]


def test_popularity_is_reproduced_exactly_through_the_recommender():
    """evaluate() on popularity scores == PopularityRecommender.recommend (ids, history filtered) + per-user
    metrics, with many tied counts."""
    rng = np.random.default_rng(3)
    n_items = 50
    catalogue = Catalogue(Movie(item_id=10 * i + 7, title=f"m{i}") for i in range(n_items))
    counts = rng.integers(0, 4, size=n_items)  # heavy ties
    users = HeldOutUsers(
        np.arange(20),
        [rng.choice(n_items, 6, replace=False) for _ in range(20)],
        [rng.choice(n_items, 3, replace=False) for _ in range(20)],
    )
    got = evaluate(popularity_scores(counts), users, (5,), 10)
    recommender = PopularityRecommender(catalogue, counts)
    ranked = np.stack([catalogue.rows(recommender.recommend(catalogue.ids[f], k=10)[0]) for f in users.fold_in])
    assert got["recall@5"] == summarize(recall_at_k(ranked, users.targets, 5))
    assert got["ndcg@10"] == summarize(ndcg_at_k(ranked, users.targets, 10))
