import numpy as np
import pytest
import torch

from retrieval.sampling import NegativeSampler, PositiveLookup


def test_uniform_sampler_draws_uniformly_with_constant_log_q():
    sampler = NegativeSampler(10)
    negatives = sampler.sample(50_000, torch.Generator().manual_seed(0))
    assert len(negatives) == 50_000
    assert torch.allclose(negatives.log_q, torch.full((50_000,), -np.log(10.0)))
    frequency = torch.bincount(negatives.rows, minlength=10).float() / 50_000
    assert torch.allclose(frequency, torch.full((10,), 0.1), atol=0.01)


def test_popularity_sampler_follows_smoothed_counts_to_the_alpha():
    counts = np.array([0, 1, 3, 15, 80])
    sampler = NegativeSampler(5, "popularity", counts, alpha=0.5)
    expected = (counts + 1.0) ** 0.5 / ((counts + 1.0) ** 0.5).sum()
    assert torch.allclose(sampler.log_q.exp(), torch.tensor(expected, dtype=torch.float32), atol=1e-6)
    negatives = sampler.sample(100_000, torch.Generator().manual_seed(1))
    frequency = torch.bincount(negatives.rows, minlength=5).double() / 100_000
    assert np.allclose(frequency.numpy(), expected, atol=0.01)
    assert torch.equal(negatives.log_q, sampler.log_q[negatives.rows])


def test_popularity_sampler_needs_counts():
    with pytest.raises(ValueError, match="item_counts"):
        NegativeSampler(5, "popularity")


def test_sampler_is_seeded():
    sampler = NegativeSampler(1000)
    a = sampler.sample(64, torch.Generator().manual_seed(7)).rows
    b = sampler.sample(64, torch.Generator().manual_seed(7)).rows
    assert torch.equal(a, b)


def test_positive_lookup_matches_brute_force():
    rng = np.random.default_rng(0)
    histories = [rng.choice(50, size=rng.integers(0, 20), replace=False) for _ in range(30)]
    lookup = PositiveLookup(histories, 50)
    users = torch.from_numpy(rng.integers(0, 30, size=40))
    items = torch.from_numpy(rng.integers(0, 50, size=25))
    expected = torch.tensor([[int(i) in set(histories[int(u)]) for i in items] for u in users])
    assert torch.equal(lookup.contains(users, items), expected)
    assert lookup.contains(users, items).any()


def test_positive_lookup_without_positives():
    lookup = PositiveLookup([np.zeros(0, np.int64)], 5)
    assert not lookup.contains(torch.tensor([0]), torch.arange(5)).any()
