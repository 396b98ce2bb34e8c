import numpy as np
import pandas as pd
import pytest

from retrieval.catalogue import Catalogue, Movie
from retrieval.config import RetrievalConfig
from retrieval.data import implicit_positives, load_movielens
from retrieval.errors import DataError
from retrieval.splits import make_split, strong_generalization_split, temporal_split, user_histories


@pytest.fixture(scope="module")
def synthetic(movielens_dir):
    data = load_movielens("ml-latest-small", path=movielens_dir)
    return data.catalogue, implicit_positives(data.ratings, 3.5)


def test_user_histories_are_time_ordered():
    catalogue = Catalogue(Movie(item_id=i, title=f"m{i}") for i in (10, 20, 30))
    positives = pd.DataFrame({"user_id": [2, 1, 1, 1], "item_id": [10, 30, 10, 20], "timestamp": [5, 9, 1, 1]})
    users, histories = user_histories(positives, catalogue)
    assert users.tolist() == [1, 2]
    assert [h.tolist() for h in histories] == [[0, 1, 2], [0]]  # ties in time broken by row


def test_strong_split_holds_out_whole_users(synthetic):
    catalogue, positives = synthetic
    split = strong_generalization_split(positives, catalogue, heldout_fraction=0.1, seed=3)
    assert split.kind == "strong" and split.n_items == 40
    assert len(split.validation) == len(split.test) == 12  # 10% of 120 users each
    train, val, test = set(split.train_user_ids), set(split.validation.user_ids), set(split.test.user_ids)
    assert not (train & val or train & test or val & test)
    assert len(train | val | test) == 120
    _, histories = user_histories(positives, catalogue)
    by_user = dict(zip(user_histories(positives, catalogue)[0], histories, strict=True))
    for users in (split.validation, split.test):
        for user, fold_in, targets in zip(users.user_ids, users.fold_in, users.targets, strict=True):
            assert not set(fold_in) & set(targets)
            assert sorted([*fold_in, *targets]) == sorted(by_user[user])
            assert len(targets) == max(1, round(0.2 * len(by_user[user])))
            assert len(fold_in) >= 1


def test_strong_split_is_seeded(synthetic):
    catalogue, positives = synthetic
    a = strong_generalization_split(positives, catalogue, seed=1)
    b = strong_generalization_split(positives, catalogue, seed=1)
    c = strong_generalization_split(positives, catalogue, seed=2)
    assert np.array_equal(a.test.user_ids, b.test.user_ids)
    assert all(np.array_equal(x, y) for x, y in zip(a.test.targets, b.test.targets, strict=True))
    assert not np.array_equal(a.test.user_ids, c.test.user_ids)


def test_strong_split_scales_and_caps(synthetic):
    catalogue, positives = synthetic
    assert len(strong_generalization_split(positives, catalogue, heldout_fraction=0.001).test) == 1
    assert len(strong_generalization_split(positives, catalogue, heldout_fraction=0.3, max_heldout_users=5).test) == 5
    with pytest.raises(DataError, match="min_user_positives"):
        strong_generalization_split(positives, catalogue, min_user_positives=1000)


def test_temporal_split_leaves_the_last_positive_out(synthetic):
    catalogue, positives = synthetic
    split = temporal_split(positives, catalogue)
    users, histories = user_histories(positives, catalogue)
    assert split.kind == "temporal" and len(split.train_user_ids) == len(users)
    for u, history in enumerate(histories):
        if len(history) < 3:
            continue
        t = int(np.flatnonzero(split.test.user_ids == users[u])[0])
        assert split.test.targets[t].tolist() == [history[-1]]
        assert split.test.fold_in[t].tolist() == history[:-1].tolist()
        assert split.validation.targets[t].tolist() == [history[-2]]
        assert split.train_items[u].tolist() == history[:-2].tolist()


def test_item_counts_and_make_split(synthetic):
    catalogue, positives = synthetic
    split = make_split(positives, catalogue, RetrievalConfig(split="strong"))
    counts = split.item_counts()
    assert counts.sum() == sum(len(h) for h in split.train_items) and counts.shape == (40,)
    assert make_split(positives, catalogue, RetrievalConfig(split="temporal")).kind == "temporal"
