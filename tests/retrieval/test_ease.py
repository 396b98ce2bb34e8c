import numpy as np
import pytest
import torch

from retrieval.ease import EASE, active_items, ease_weights, gram_matrix
from retrieval.models import Bags


def _random_histories(n_users: int, n_items: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(n_items, size=rng.integers(1, n_items // 2), replace=False)) for _ in range(n_users)]


def _dense(histories: list[np.ndarray], n_items: int) -> np.ndarray:
    x = np.zeros((len(histories), n_items))
    for u, rows in enumerate(histories):
        x[u, rows] = 1.0
    return x


def test_gram_matrix_is_x_transpose_x_over_the_given_columns():
    histories = _random_histories(30, 12, seed=0)
    x = _dense(histories, 12)
    items = np.array([0, 3, 4, 11])
    assert np.array_equal(gram_matrix(histories, items, batch_users=7), x[:, items].T @ x[:, items])


def test_ease_weights_match_a_brute_force_constrained_least_squares():
    """Column j of B is the ridge regression of item j on all other items (diag(B) = 0), solved one by one."""
    histories = _random_histories(25, 6, seed=1)
    x, l2 = _dense(histories, 6), 3.0
    got = ease_weights(x.T @ x, l2)
    for j in range(6):
        others = [i for i in range(6) if i != j]
        a = x[:, others]
        column = np.linalg.solve(a.T @ a + l2 * np.eye(5), a.T @ x[:, j])
        assert np.allclose(got[others, j], column) and got[j, j] == 0.0
    with pytest.raises(ValueError, match="l2"):
        ease_weights(x.T @ x, 0.0)


def test_solving_over_active_items_equals_the_full_solve():
    histories = [h[h % 3 != 0] for h in _random_histories(40, 15, seed=2)]  # items 0, 3, 6, ... never seen
    histories = [h for h in histories if len(h)]
    assert active_items(histories, 15).tolist() == [i for i in range(15) if i % 3 != 0]
    model = EASE(histories, 15, l2=5.0)
    full = ease_weights(_dense(histories, 15).T @ _dense(histories, 15), 5.0)
    queries = [np.array([1, 2, 3]), np.array([14]), np.array([0])]
    scores = model.scores(Bags.pack(queries))
    assert scores.shape == (3, 15)
    assert torch.allclose(scores, torch.from_numpy(_dense(queries, 15) @ full).float(), atol=1e-5)
    assert torch.all(scores[2] == 0)  # only an unseen item: nothing to go on


def test_fold_in_weights_act_linearly():
    histories = _random_histories(30, 10, seed=3)
    model = EASE(histories, 10, l2=2.0)
    liked, disliked = model.scores(Bags.pack([np.array([1]), np.array([4])]))
    mixed = model.scores(Bags.pack([np.array([1, 4])], [np.array([1.0, -1.0])]))[0]
    assert torch.allclose(mixed, liked - disliked, atol=1e-6)


def test_precomputed_gram_must_fit():
    histories = _random_histories(10, 8, seed=4)
    with pytest.raises(ValueError, match="active items"):
        EASE(histories, 8, 1.0, gram=np.eye(2))
