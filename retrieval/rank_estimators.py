"""Full-catalogue rank estimates from sampled negatives, and the rank weights WARP and LambdaRank use.

Notation: n items, an item's true rank r = 1 + V where V counts the other n - 1 items scoring above it;
m negatives drawn uniformly with replacement from those n - 1, v of which score above it. Then
v ~ Binomial(m, p) with p = V / (n - 1). All functions are pure and broadcast over tensors; `v` may be
fractional (importance-weighted counts under non-uniform sampling) and `m` may vary per row (masked hits).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch

from retrieval.config import RankEstimator

WeightFn = Callable[[torch.Tensor], torch.Tensor]
EULER_GAMMA = 0.5772156649015329


def sampled_rank(v: torch.Tensor, m: torch.Tensor | float, n: torch.Tensor | float) -> torch.Tensor:
    """Uncorrected: r = 1 + v. Biased low by a factor of about m / (n - 1) (the traditional choice)."""
    return 1.0 + v


def scaled_rank(v: torch.Tensor, m: torch.Tensor | float, n: torch.Tensor | float) -> torch.Tensor:
    """Unbiased: r = 1 + v (n - 1) / m, since E[v] = m V / (n - 1)."""
    return 1.0 + v * (n - 1) / m


def smoothed_rank(v: torch.Tensor, m: torch.Tensor | float, n: torch.Tensor | float) -> torch.Tensor:
    """Posterior mean with p ~ Beta(1, 1): r = 1 + (n - 1)(v + 1)/(m + 2). Never claims rank 1 from v = 0."""
    return 1.0 + (n - 1) * (v + 1) / (m + 2)


def harmonic_weight(rank: torch.Tensor) -> torch.Tensor:
    """WARP's Phi(r) = sum_{k=1..r} 1/k, extended to real r >= 1 as digamma(r + 1) + Euler's gamma."""
    return torch.digamma(rank + 1.0) + EULER_GAMMA


def ndcg_gain(rank: torch.Tensor, cutoff: int | None = None) -> torch.Tensor:
    """DCG discount of a single relevant item: 1 / log2(1 + r), and 0 for r > cutoff when a cutoff is given."""
    gain = 1.0 / torch.log2(1.0 + rank)
    return gain if cutoff is None else torch.where(rank <= cutoff, gain, torch.zeros_like(gain))


@lru_cache(maxsize=16)
def ndcg_gain_at(cutoff: int | None) -> WeightFn:
    """`ndcg_gain` with a fixed cutoff, one function object per cutoff (so posterior tables can be memoised)."""
    return lambda rank: ndcg_gain(rank, cutoff)


@lru_cache(maxsize=8)
def _legendre(n_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    nodes, weights = np.polynomial.legendre.leggauss(n_nodes)
    return torch.from_numpy(nodes).float(), torch.from_numpy(weights).float()


def posterior_expected_weight(
    v: torch.Tensor,
    m: torch.Tensor | float,
    n: torch.Tensor | float,
    weight_fn: WeightFn,
    offset: torch.Tensor | float = 0.0,
    n_nodes: int = 48,
    half_width: float = 10.0,
) -> torch.Tensor:
    """E[f(offset + 1 + (n - 1) p)] with p ~ Beta(v + 1, m - v + 1), the posterior of p under a uniform prior.

    Jensen: for the convex NDCG gain 1/log2(1 + r) this exceeds f(smoothed rank); for the concave harmonic
    weight it is below it. The gap is largest for small m, where the posterior is wide.
    Quadrature, deterministic: substitute t = logit(p), whose density is
        pi(t) proportional to sigmoid(t)^a sigmoid(-t)^b,  a = v + 1, b = m - v + 1,
    smooth and unimodal with mean psi(a) - psi(b) and variance psi'(a) + psi'(b). Integrate with
    `n_nodes`-point Gauss-Legendre over mean +- `half_width` standard deviations, self-normalised:
        E[g] = sum_j w_j pi(t_j) g(t_j) / sum_j w_j pi(t_j).
    Truncation loses < exp(-half_width * sd * min(a, b)) <= 3e-6 of the mass (sd >= 1.28 when min(a, b) = 1).
    """
    device = torch.as_tensor(v).device
    v, m, n, offset = (torch.as_tensor(x, dtype=torch.float32, device=device) for x in (v, m, n, offset))
    a = v.clamp(min=0.0) + 1.0
    b = (m - v).clamp(min=0.0) + 1.0
    mean = torch.digamma(a) - torch.digamma(b)
    sd = torch.sqrt(torch.polygamma(1, a) + torch.polygamma(1, b))
    nodes, weights = (x.to(mean.device) for x in _legendre(n_nodes))
    t = mean[..., None] + half_width * sd[..., None] * nodes  # [..., n_nodes]
    log_density = -a[..., None] * torch.nn.functional.softplus(-t) - b[..., None] * torch.nn.functional.softplus(t)
    mass = weights * torch.exp(log_density - log_density.amax(dim=-1, keepdim=True))
    rank = offset[..., None] + 1.0 + (n[..., None] - 1.0) * torch.sigmoid(t)
    return (mass * weight_fn(rank)).sum(-1) / mass.sum(-1)


TABLE_ENTRIES = 1 << 18  # largest memoised (v, m, offset) table: m up to ~360 with offsets 0 and 1


@lru_cache(maxsize=16)
def _posterior_table(
    weight_fn: WeightFn, n: float, max_m: int, max_offset: int, device: torch.device
) -> torch.Tensor:
    """`[max_m + 1, max_m + 1, max_offset + 1]` posterior_expected_weight(v, m, n, weight_fn, offset) at integer
    v, m, offset (entries with v > m are unused), on `device`. Memoised: training asks for the same table at
    every step. Computed on the CPU, so the table is the same on every device."""
    steps = [torch.arange(size + 1.0, device="cpu") for size in (max_m, max_m, max_offset)]
    v, m, offset = torch.meshgrid(*steps, indexing="ij")
    return posterior_expected_weight(v, m, n, weight_fn, offset).to(device)


def _posterior_lookup(
    v: torch.Tensor, m: torch.Tensor | float, n: torch.Tensor | float, weight_fn: WeightFn, offset: torch.Tensor | float
) -> torch.Tensor:
    """posterior_expected_weight, gathered from a memoised table of integer (v, m, offset) (uniform sampling
    gives integer counts; the table is sized by the next power of two above max m). Falls back to direct
    evaluation for fractional or negative counts, a per-element n, or a table above TABLE_ENTRIES.
    """
    device = torch.as_tensor(v).device
    as_float = [torch.as_tensor(x, dtype=torch.float32, device=device) for x in (v, m, offset)]
    v, m, offset = torch.broadcast_tensors(*as_float)
    n = torch.as_tensor(n, dtype=torch.float32, device=device)
    integral = all(torch.equal(x, x.round()) for x in (v, m, offset)) and n.numel() == 1 and v.numel() > 0
    if integral and min(v.min(), m.min(), offset.min()) >= 0:
        max_m = 1 << (max(int(m.max()), int(v.max()), 1) - 1).bit_length()  # next power of two
        max_offset = int(offset.max())
        if (max_m + 1) ** 2 * (max_offset + 1) <= TABLE_ENTRIES:
            table = _posterior_table(weight_fn, float(n), max_m, max_offset, v.device)
            return table[v.long(), m.long(), offset.long()]
    return posterior_expected_weight(v, m, n, weight_fn, offset)


POINT_ESTIMATORS = {"sampled": sampled_rank, "scaled": scaled_rank, "smoothed": smoothed_rank}


def rank_weight(
    v: torch.Tensor,
    m: torch.Tensor | float,
    n: torch.Tensor | float,
    weight_fn: WeightFn,
    estimator: RankEstimator,
    offset: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """The weight of a rank estimated from (v, m, n): f(offset + r_hat) for sampled / scaled / smoothed,
    E[f(offset + r)] under the Beta posterior for `posterior`. `offset` counts items known exactly to rank above.
    """
    if estimator == "posterior":
        return _posterior_lookup(v, m, n, weight_fn, offset)
    if estimator not in POINT_ESTIMATORS:
        raise ValueError(f"rank_estimator must be one of sampled, scaled, smoothed, posterior; got {estimator!r}")
    return weight_fn(offset + POINT_ESTIMATORS[estimator](v, m, n))
