import numpy as np
import pandas as pd
import pytest

from ilm_model.interactions import Interactions, co_interacted_pairs, user_item_pairs


def test_co_interacted_pairs_are_consecutive_items_brute_force():
    histories = [np.array([3, 1, 1, 4]), np.array([2]), np.array([0, 2, 3])]
    expected = [(h[t], h[t + 1]) for h in histories for t in range(len(h) - 1) if h[t] != h[t + 1]]
    assert [tuple(p) for p in co_interacted_pairs(histories)] == expected == [(3, 1), (1, 4), (0, 2), (2, 3)]
    allowed = np.array([True, True, True, False, True])
    assert co_interacted_pairs(histories, allowed).tolist() == [[1, 4], [0, 2]]
    assert co_interacted_pairs([]).shape == (0, 2)


def test_user_item_pairs():
    histories = [np.array([3, 1]), np.array([], dtype=np.int64), np.array([2])]
    assert user_item_pairs(histories).tolist() == [[0, 3], [0, 1], [2, 2]]
    assert user_item_pairs(histories, np.array([True, True, False, True])).tolist() == [[0, 3], [0, 1]]


def test_from_positives_orders_by_time(catalogue):
    positives = pd.DataFrame(
        {"user_id": [7, 7, 7, 2], "item_id": [30, 10, 20, 40], "timestamp": [5, 1, 3, 9]}
    )
    interactions = Interactions.from_positives(positives, catalogue)
    assert [h.tolist() for h in interactions.histories] == [[3], [0, 1, 2]]  # users 2, 7; rows of ids 40 | 10 20 30
    with pytest.raises(ValueError, match="1 rows for 2 histories"):
        Interactions(interactions.histories, np.zeros((1, 4)))
