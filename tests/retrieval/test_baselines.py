import numpy as np
import pytest
import torch

from retrieval.baselines import (
    ImplicitALS,
    LightFMWarp,
    TrainedRowScores,
    implicit_bpr,
    interaction_matrix,
    popularity_scores,
    rows_with_fold_in,
)
from retrieval.models import Bags
from retrieval.splits import HeldOutUsers, Split


def _split() -> Split:
    rng = np.random.default_rng(0)
    n_items = 30
    train = [np.sort(rng.choice(n_items, size=rng.integers(2, 12), replace=False)) for _ in range(40)]
    held = [np.sort(rng.choice(n_items, size=5, replace=False)) for _ in range(6)]
    validation = HeldOutUsers(np.arange(40, 43), held[:3], [np.array([0])] * 3)
    test = HeldOutUsers(np.arange(43, 46), [held[3], held[4], train[0].copy()], [np.array([1])] * 3)
    return Split("strong", n_items, np.arange(40), train, validation, test)


def test_popularity_scores_ignore_the_history():
    scores = popularity_scores(np.array([3, 0, 7]))(Bags.pack([np.array([0]), np.array([1, 2])]))
    assert scores.tolist() == [[3.0, 0.0, 7.0], [3.0, 0.0, 7.0]]


def test_interaction_matrix():
    matrix = interaction_matrix([np.array([2, 0]), np.array([], np.int64), np.array([1])], 4, None)
    assert matrix.shape == (3, 4)
    assert matrix.toarray().tolist() == [[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0]]
    weighted = interaction_matrix([np.array([3])], 4, [np.array([-1.0])])
    assert weighted.toarray().tolist() == [[0, 0, 0, -1]]


def test_rows_with_fold_in_adds_each_new_held_out_history_once():
    split = _split()
    rows = rows_with_fold_in(split)
    assert len(rows) == 40 + 5  # test user 3's fold-in is a training history already
    assert all(np.array_equal(a, b) for a, b in zip(rows[40:], [*split.validation.fold_in, *split.test.fold_in[:2]]))


def test_trained_row_scores_look_up_the_row_of_each_history():
    histories = [np.array([0, 2]), np.array([1])]
    users, items, bias = (
        np.array([[1.0, 0.0], [0.0, 2.0]]),
        np.array([[1.0, 1.0], [0.0, 1.0], [2.0, 0.0]]),
        np.array([0.0, 0.5, 0.0]),
    )
    score_fn = TrainedRowScores(histories, users, items, bias)
    got = score_fn(Bags.pack([np.array([1]), np.array([2, 0])]))  # order within a history does not matter
    assert got.tolist() == [[2.0, 2.5, 0.0], [1.0, 0.5, 2.0]]
    with pytest.raises(KeyError, match="rows_with_fold_in"):
        score_fn(Bags.pack([np.array([0])]))


def test_implicit_als_folds_in_by_its_least_squares_solve():
    pytest.importorskip("implicit", reason="implicit is an optional benchmark extra")
    split = _split()
    model = ImplicitALS(factors=4, regularization=0.5, alpha=3.0, iterations=3, threads=1).fit(split.train_items, 30)
    histories = [np.array([1, 4, 9]), np.array([0, 29])]
    y = np.asarray(model.model.item_factors, np.float64)
    expected = []
    for rows in histories:  # (Y^T Y + (alpha - 1) Y_h^T Y_h + reg I) p = alpha Y_h^T 1
        a = y.T @ y + (3.0 - 1.0) * y[rows].T @ y[rows] + 0.5 * np.eye(4)
        p = np.linalg.solve(a, 3.0 * y[rows].sum(0))
        expected.append(p @ y.T)
    got = model(Bags.pack(histories))
    assert torch.allclose(got, torch.tensor(np.array(expected), dtype=torch.float32), atol=1e-4)


def test_implicit_bpr_scores_every_held_out_user_by_its_trained_row():
    pytest.importorskip("implicit", reason="implicit is an optional benchmark extra")
    split = _split()
    rows = rows_with_fold_in(split)
    score_fn = implicit_bpr(rows, 30, factors=4, learning_rate=0.05, regularization=0.01, iterations=5, threads=1)
    assert score_fn.user_factors.shape == (45, 5) and score_fn.item_factors.shape == (30, 5)  # + the item bias
    expected = score_fn.user_factors[[43, 44, 0]] @ score_fn.item_factors.T  # test fold-ins: rows 43, 44 and 0
    assert torch.equal(score_fn(Bags.pack(split.test.fold_in)), expected)


def test_lightfm_snapshots_score_by_trained_row_with_item_bias():
    pytest.importorskip("lightfm", reason="lightfm is an optional benchmark extra")
    split = _split()
    model = LightFMWarp(rows_with_fold_in(split), 30, components=4, learning_rate=0.05, threads=1)
    model.fit_epoch()
    snapshot = model.scores()
    m = model.model
    expected = m.user_embeddings[[43, 44, 0]] @ m.item_embeddings.T + m.item_biases
    assert torch.allclose(snapshot(Bags.pack(split.test.fold_in)), torch.from_numpy(expected).float(), atol=1e-6)
    before = snapshot(Bags.pack(split.test.fold_in))
    model.fit_epoch()
    assert torch.equal(snapshot(Bags.pack(split.test.fold_in)), before)  # a snapshot does not move with training
