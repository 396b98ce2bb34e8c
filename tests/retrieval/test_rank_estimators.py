import math

import numpy as np
import pytest
import torch

from retrieval.rank_estimators import (
    harmonic_weight,
    ndcg_gain,
    posterior_expected_weight,
    rank_weight,
    sampled_rank,
    scaled_rank,
    smoothed_rank,
)


def _sampled_violators(scores: np.ndarray, positive: int, m: int, draws: int, rng: np.random.Generator):
    """Brute force: the true rank of `positive`, and v over `draws` independent uniform samples of m others."""
    others = np.delete(np.arange(len(scores)), positive)
    true_rank = 1 + int((scores[others] > scores[positive]).sum())
    samples = rng.choice(others, size=(draws, m), replace=True)
    v = (scores[samples] > scores[positive]).sum(1)
    return true_rank, torch.from_numpy(v).float()


@pytest.mark.parametrize("seed", range(4))
def test_scaled_rank_is_unbiased_and_sampled_rank_is_not(seed):
    rng = np.random.default_rng(seed)
    n, m, draws = 80, 6, 40_000
    scores = rng.normal(size=n)
    for positive in rng.choice(n, size=5, replace=False):
        true_rank, v = _sampled_violators(scores, positive, m, draws, rng)
        scaled = scaled_rank(v, m, n)
        stderr = scaled.std().item() / math.sqrt(draws)
        assert abs(scaled.mean().item() - true_rank) < 4 * stderr + 1e-9
        sampled = sampled_rank(v, m, n)
        expected_sampled = 1 + m * (true_rank - 1) / (n - 1)  # E[1 + v] shrinks the rank by m / (n - 1)
        assert sampled.mean().item() == pytest.approx(
            expected_sampled, abs=4 * sampled.std().item() / math.sqrt(draws) + 1e-9
        )
        if true_rank > 10:
            assert sampled.mean().item() < 0.5 * true_rank


def test_smoothed_rank_formula_and_no_rank_one_claim():
    v = torch.tensor([0.0, 3.0, 10.0])
    assert torch.allclose(smoothed_rank(v, 10, 101), 1 + 100 * (v + 1) / 12)
    assert smoothed_rank(torch.tensor(0.0), 10, 101).item() > 1.0


def test_posterior_mean_of_the_rank_is_the_smoothed_rank():
    v = torch.tensor([0.0, 1.0, 5.0, 31.0, 32.0, 2.5])
    got = posterior_expected_weight(v, 32, 1000, lambda r: r)
    assert torch.allclose(got, smoothed_rank(v, 32, 1000), rtol=1e-4)


def _reference_expectation(v: float, m: int, n: int, f) -> float:
    """E[f(1 + (n-1) p)], p ~ Beta(v+1, m-v+1), by a fine midpoint rule in float64."""
    p = (np.arange(2_000_000) + 0.5) / 2_000_000
    log_density = v * np.log(p) + (m - v) * np.log1p(-p)
    density = np.exp(log_density - log_density.max())
    return float((density * f(1 + (n - 1) * p)).sum() / density.sum())


@pytest.mark.parametrize("v, m, n", [(0, 8, 100), (0, 256, 10_000), (3, 8, 100), (100, 128, 1000), (128, 128, 1000)])
def test_posterior_weight_matches_numerical_integration(v, m, n):
    from scipy.special import digamma

    got_gain = posterior_expected_weight(torch.tensor(float(v)), m, n, ndcg_gain).item()
    ref_gain = _reference_expectation(v, m, n, lambda r: 1 / np.log2(1 + r))
    assert got_gain == pytest.approx(ref_gain, rel=1e-4)
    got_harmonic = posterior_expected_weight(torch.tensor(float(v)), m, n, harmonic_weight).item()
    ref_harmonic = _reference_expectation(v, m, n, lambda r: digamma(r + 1) + np.euler_gamma)
    assert got_harmonic == pytest.approx(ref_harmonic, rel=1e-4)


def test_posterior_weight_versus_weight_of_the_mean_follows_jensen():
    """The NDCG gain 1/log2(1+r) is convex in r (E[g] > g(E r)); the harmonic weight is concave (E[Phi] < Phi(E r))."""
    v = torch.arange(0.0, 17.0)
    gain_posterior = posterior_expected_weight(v, 16, 5000, ndcg_gain)
    assert torch.all(gain_posterior > ndcg_gain(smoothed_rank(v, 16, 5000)))
    harmonic_posterior = posterior_expected_weight(v, 16, 5000, harmonic_weight)
    assert torch.all(harmonic_posterior < harmonic_weight(smoothed_rank(v, 16, 5000)))


def test_harmonic_weight_is_the_harmonic_number_at_integers():
    ranks = torch.tensor([1.0, 2.0, 3.0, 10.0, 100.0])
    expected = torch.tensor([math.fsum(1 / k for k in range(1, int(r) + 1)) for r in ranks])
    assert torch.allclose(harmonic_weight(ranks), expected, atol=1e-5)


def test_ndcg_gain_with_cutoff():
    ranks = torch.tensor([1.0, 3.0, 10.0, 11.0])
    assert torch.allclose(ndcg_gain(ranks), 1 / torch.log2(1 + ranks))
    assert ndcg_gain(ranks, cutoff=10).tolist()[-1] == 0.0
    assert ndcg_gain(ranks, cutoff=10)[2].item() == pytest.approx(1 / math.log2(11))


def test_rank_weight_dispatch_and_offset():
    v = torch.tensor([0.0, 2.0, 7.0])
    assert torch.allclose(rank_weight(v, 8, 50, ndcg_gain, "sampled"), ndcg_gain(1 + v))
    assert torch.allclose(rank_weight(v, 8, 50, ndcg_gain, "scaled", offset=1.0), ndcg_gain(2 + v * 49 / 8))
    assert torch.allclose(rank_weight(v, 8, 50, ndcg_gain, "smoothed"), ndcg_gain(smoothed_rank(v, 8, 50)))
    with pytest.raises(ValueError, match="rank_estimator"):
        rank_weight(v, 8, 50, ndcg_gain, "exact")


@pytest.mark.parametrize("fractional", [False, True])
def test_posterior_lookup_equals_direct_evaluation(fractional):
    generator = torch.Generator().manual_seed(0)
    v = torch.randint(0, 40, (200, 9), generator=generator).float() + (0.25 if fractional else 0.0)
    m = torch.randint(40, 48, (200, 1), generator=generator).float()
    offset = (torch.rand(200, 9, generator=generator) > 0.5).float()
    fast = rank_weight(v, m, 3000, ndcg_gain, "posterior", offset)
    direct = posterior_expected_weight(v, m, 3000, ndcg_gain, offset)
    assert torch.allclose(fast, direct, atol=1e-7)


def _brute_force_draws(n: int, m: int, draws: int, seed: int) -> tuple[np.ndarray, torch.Tensor]:
    """Every item of a random n-item problem as the positive: (true ranks [n], v [n, draws]) from full ranking
    and `draws` uniform samples of m negatives among the other n - 1 items."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=n)
    ranks, counts = [], []
    for positive in range(n):
        rank, v = _sampled_violators(scores, positive, m, draws, rng)
        ranks.append(rank)
        counts.append(v)
    return np.array(ranks), torch.stack(counts)


def test_estimator_bias_and_variance_against_full_ranking():
    """Point estimates of the rank over many draws: scaled is unbiased, sampled shrinks the rank by m / (n - 1),
    smoothed has the known bias towards the middle and less variance than scaled."""
    n, m, draws = 60, 8, 20_000
    true, v = _brute_force_draws(n, m, draws, seed=0)
    p = torch.from_numpy((true - 1) / (n - 1)).float()
    expected = {
        "sampled": 1 + m * p,
        "scaled": torch.from_numpy(true).float(),
        "smoothed": 1 + (n - 1) * (m * p + 1) / (m + 2),
    }
    estimates = {
        name: fn(v, m, n)
        for name, fn in (("sampled", sampled_rank), ("scaled", scaled_rank), ("smoothed", smoothed_rank))
    }
    for name, estimate in estimates.items():
        stderr = estimate.std(1) / math.sqrt(draws)
        assert torch.all((estimate.mean(1) - expected[name]).abs() <= 4 * stderr + 1e-4), name
    variance = {name: estimate.var(1) for name, estimate in estimates.items()}
    exact_scaled_variance = ((n - 1) / m) ** 2 * m * p * (1 - p)
    assert torch.allclose(variance["scaled"], exact_scaled_variance, rtol=0.05, atol=1e-3)
    assert torch.allclose(variance["smoothed"], variance["scaled"] * (m / (m + 2)) ** 2, rtol=1e-4, atol=1e-4)
    assert (estimates["sampled"].mean(1) - torch.from_numpy(true)).abs().mean() > 20  # biased by ~(n - m) p


@pytest.mark.parametrize("weight_fn", [ndcg_gain, harmonic_weight], ids=["ndcg_gain", "harmonic"])
def test_posterior_weight_has_the_lowest_error_over_all_ranks(weight_fn):
    """Mean squared error of each estimator's weight against the weight of the true rank, averaged over every
    item of a brute-force problem (true ranks uniform on 1..n, the Beta(1, 1) prior): the posterior expectation
    is the Bayes estimator there, so it must win; smoothed beats scaled, which beats sampled."""
    n, m, draws = 60, 8, 4_000
    true, v = _brute_force_draws(n, m, draws, seed=1)
    target = weight_fn(torch.from_numpy(true).float())[:, None]
    mse = {
        name: ((rank_weight(v, m, n, weight_fn, name) - target) ** 2).mean().item()
        for name in ("sampled", "scaled", "smoothed", "posterior")
    }
    assert mse["posterior"] < mse["smoothed"] < mse["scaled"] < mse["sampled"]
    assert mse["posterior"] < 0.95 * mse["smoothed"]


def test_posterior_table_is_memoised_per_weight_function_and_size():
    from retrieval.rank_estimators import _posterior_table, ndcg_gain_at

    assert ndcg_gain_at(10) is ndcg_gain_at(10) and ndcg_gain_at(10) is not ndcg_gain_at(None)
    v = torch.tensor([[0.0, 3.0], [7.0, 100.0]])
    first = rank_weight(v, 100, 5000, ndcg_gain_at(10), "posterior")
    hits = _posterior_table.cache_info().hits
    again = rank_weight(v, 100, 5000, ndcg_gain_at(10), "posterior")
    assert _posterior_table.cache_info().hits == hits + 1 and torch.equal(first, again)
    assert torch.allclose(first, posterior_expected_weight(v, 100, 5000, ndcg_gain_at(10)), atol=1e-7)
