import numpy as np
import pytest
import torch

from retrieval.config import RetrievalConfig
from retrieval.models import BagOfItemsTwoTower, Bags, MatrixFactorization, build_model


def test_bags_pack_offsets_and_weights():
    bags = Bags.pack(
        [np.array([3, 1]), np.array([], dtype=np.int64), np.array([2])],
        [np.array([1.0, -2.0]), np.zeros(0), np.array([0.5])],
    )
    assert bags.rows.tolist() == [3, 1, 2]
    assert bags.offsets.tolist() == [0, 2, 2]
    assert bags.weight_mass().tolist() == [3.0, 0.0, 0.5]
    assert bags.bag_of_entries().tolist() == [0, 0, 2]
    assert [h.tolist() for h in bags.histories()] == [[3, 1], [], [2]]
    with pytest.raises(ValueError, match="one per item"):
        Bags.pack([np.array([1, 2])], [np.array([1.0])])


def test_two_tower_user_vector_is_the_weighted_mean_of_input_items():
    torch.manual_seed(0)
    model = BagOfItemsTwoTower(n_items=6, dim=4)
    table = model.input_items.weight.detach()
    bags = Bags.pack([np.array([0, 2, 5]), np.array([1, 4])], [np.array([1.0, 1.0, 1.0]), np.array([1.0, -1.0])])
    got = model.user_vectors(bags).detach()
    assert torch.allclose(got[0], table[[0, 2, 5]].mean(0), atol=1e-6)
    assert torch.allclose(got[1], (table[1] - table[4]) / 2, atol=1e-6)
    assert model.item_vectors().shape == (6, 4)


def test_two_tower_dislike_pushes_the_session_away():
    torch.manual_seed(1)
    model = BagOfItemsTwoTower(n_items=5, dim=8)
    with torch.no_grad():
        model.input_items.weight.copy_(model.output_items.weight)  # make item 3's own direction meaningful
        liked = model.fold_in(Bags.pack([np.array([0, 3])]))
        disliked = model.fold_in(Bags.pack([np.array([0, 3])], [np.array([1.0, -1.0])]))
        q3 = model.item_vectors()[3]
    assert (disliked @ q3).item() < (liked @ q3).item()


def test_two_tower_empty_history_and_projection():
    model = BagOfItemsTwoTower(n_items=5, dim=3, projection=True)
    assert torch.equal(model.fold_in(Bags.pack([np.zeros(0, np.int64)])), torch.zeros(1, 3))
    assert torch.allclose(model.projection.weight, torch.eye(3))


def test_mf_fold_in_is_the_ials_ridge_solution():
    torch.manual_seed(2)
    model = MatrixFactorization(n_users=3, n_items=7, dim=4, fold_in_l2=0.3, fold_in_unobserved_weight=0.2)
    history, weights = np.array([1, 4, 6]), np.array([1.0, 2.0, -1.0])
    got = model.fold_in(Bags.pack([history], [weights]))[0].detach().numpy()
    q = model.item_vectors().detach().double().numpy()
    a = 0.2 * q.T @ q + 0.3 * np.eye(4) + (q[history].T * np.abs(weights)) @ q[history]
    expected = np.linalg.solve(a, q[history].T @ weights)
    assert np.allclose(got, expected, atol=1e-4)
    assert model.user_vectors(torch.tensor([0, 2])).shape == (2, 4)


def test_build_model_follows_config():
    assert isinstance(build_model(RetrievalConfig(), 10, 4), BagOfItemsTwoTower)
    mf = build_model(RetrievalConfig(model="mf", embedding_dim=5), 10, 4)
    assert isinstance(mf, MatrixFactorization) and mf.users.weight.shape == (4, 5)
