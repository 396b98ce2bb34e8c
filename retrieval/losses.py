"""Sampled-batch ranking losses as chains of small pure steps (TFRS style).

Shapes: B positives (user u_b, item i_b) with scores `pos [B]`; m negatives shared by the batch with scores
`neg [B, m]` (one matmul); `valid [B, m]` is False where a negative is an accidental hit. n = catalogue size.
Rank weights are computed without gradient (as in WARP and LambdaRank); only the pairwise terms backpropagate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from retrieval.config import LossKind, RankEstimator, SamplingKind
from retrieval.rank_estimators import harmonic_weight, ndcg_gain_at, rank_weight

MASK_VALUE = -1e9  # large finite logit for removed candidates (never -inf: keeps softmax gradients finite)


def remove_accidental_hits(neg: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """`[B, m]` scores with invalid (accidental-hit) entries replaced by MASK_VALUE."""
    return neg.masked_fill(~valid, MASK_VALUE)


def sampling_probability_correction(logits: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """logQ correction (Yi et al. 2019): s(u, j) - log Q(j). Subtract, never add: frequent items are over-sampled."""
    return logits - log_q


def violations(pos: torch.Tensor, neg: torch.Tensor, valid: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """`[B, m]` bool: s(u_b, j_k) + margin > s(u_b, i_b) and j_k is a valid negative."""
    return (neg + margin > pos[:, None]) & valid


def violator_count(violated: torch.Tensor, importance: torch.Tensor | None = None) -> torch.Tensor:
    """`[B]` v_b = sum_k 1[violated_bk] w_k, w = importance (1 for uniform sampling).

    With non-uniform sampling, w_k = 1 / ((n - 1) Q(j_k)) makes (n - 1) v / m the Horvitz-Thompson estimate.
    """
    counts = violated.float()
    return (counts if importance is None else counts * importance).sum(-1)


def negative_violator_count(
    neg: torch.Tensor, valid: torch.Tensor, importance: torch.Tensor | None = None
) -> torch.Tensor:
    """`[B, m]` v_bk = sum_{l != k, valid} w_l 1[s(u_b, j_l) > s(u_b, j_k)]: other sampled negatives above j_k.

    Computed by one sort per row (exclusive cumulative weight in descending score order); exact for distinct
    scores, ties are counted in sort order. Entries of invalid k carry no meaning (they are masked downstream).
    """
    weights = valid.float() if importance is None else valid.float() * importance
    order = torch.argsort(neg.masked_fill(~valid, -torch.inf), dim=-1, descending=True, stable=True)
    sorted_weights = weights.gather(-1, order)
    above = sorted_weights.cumsum(-1) - sorted_weights
    return torch.empty_like(above).scatter_(-1, order, above)


def harmonic_rank_weight(v: torch.Tensor, m: torch.Tensor, n_items: int, estimator: RankEstimator) -> torch.Tensor:
    """`[B]` WARP weight Phi(r_b) = sum_{k<=r_b} 1/k of the estimated rank (or its posterior mean)."""
    return rank_weight(v, m, n_items, harmonic_weight, estimator)


def lambda_weights(
    pos: torch.Tensor,
    neg: torch.Tensor,
    valid: torch.Tensor,
    n_items: int,
    estimator: RankEstimator,
    cutoff: int | None = None,
    importance: torch.Tensor | None = None,
) -> torch.Tensor:
    """`[B, m]` |delta NDCG(i_b, j_k)| = |g(r_i) - g(r_j)| / IDCG, g(r) = 1/log2(1 + r) (0 beyond `cutoff`).

    One relevant item, so IDCG = 1. r_i: from the positive's violators among the m_b valid negatives.
    r_j = 1[s_i > s_j] + (estimated rank of j among the other n - 1 items, from the m_b - 1 other negatives):
    the positive is one known item, the rest is sampled, scaled the same way. Invalid pairs weigh exactly 0
    (also in a row with no valid negative, where scaled's 0/0 would otherwise leak NaN into the loss).
    """
    gain = ndcg_gain_at(cutoff)
    m = valid.sum(-1).float()
    g_pos = rank_weight(violator_count(violations(pos, neg, valid), importance), m, n_items, gain, estimator)
    v_neg = negative_violator_count(neg, valid, importance)
    positive_above = (pos[:, None] > neg).float()
    g_neg = rank_weight(v_neg, (m - 1).clamp(min=1)[:, None], n_items - 1, gain, estimator, positive_above)
    return torch.where(valid, (g_pos[:, None] - g_neg).abs(), 0.0)


def warp_loss(
    pos: torch.Tensor,
    neg: torch.Tensor,
    valid: torch.Tensor,
    n_items: int,
    estimator: RankEstimator = "scaled",
    margin: float = 1.0,
    importance: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sampled-batch WARP: mean_b Phi(r_b) * mean_{k violator} max(0, margin - s_i + s_jk); 0 when v_b = 0.

    Violators: s_jk + margin > s_i. r_b is estimated from them by `estimator`. A row whose negatives are all
    accidental hits has no violator and contributes 0 (its rank estimate, e.g. scaled's 0/0, is never used).
    """
    violated = violations(pos, neg, valid, margin)
    n_violators = violated.sum(-1)
    with torch.no_grad():
        v = violator_count(violated, importance)
        weight = harmonic_rank_weight(v, valid.sum(-1).float(), n_items, estimator)
        weight = torch.where(n_violators > 0, weight, 0.0)
    hinge = F.relu(margin - pos[:, None] + neg) * violated
    mean_hinge = hinge.sum(-1) / n_violators.clamp(min=1)
    return (weight * mean_hinge).mean()


def lambdarank_loss(
    pos: torch.Tensor,
    neg: torch.Tensor,
    valid: torch.Tensor,
    n_items: int,
    estimator: RankEstimator = "scaled",
    cutoff: int | None = None,
    importance: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sampled-batch LambdaRank: mean_b sum_k |delta NDCG(i_b, j_k)| log(1 + exp(-(s_i - s_jk))) over valid k."""
    with torch.no_grad():
        weights = lambda_weights(pos, neg, valid, n_items, estimator, cutoff, importance)
    return (weights * F.softplus(neg - pos[:, None])).sum(-1).mean()


def sampled_softmax_loss(
    pos: torch.Tensor,
    neg: torch.Tensor,
    valid: torch.Tensor,
    pos_log_q: torch.Tensor,
    neg_log_q: torch.Tensor,
) -> torch.Tensor:
    """Sampled softmax with logQ correction: mean_b -log softmax([s_i - log Q(i), s_jk - log Q(j_k)])_0.

    Hits are removed (logit MASK_VALUE). The correction applies to the positive too (as tf.nn.sampled_softmax_loss);
    with uniform sampling it is a constant and changes nothing.
    """
    logits = torch.cat(
        [
            sampling_probability_correction(pos, pos_log_q)[:, None],
            remove_accidental_hits(sampling_probability_correction(neg, neg_log_q[None, :]), valid),
        ],
        dim=1,
    )
    return F.cross_entropy(logits, torch.zeros(len(pos), dtype=torch.long, device=pos.device))


def bpr_loss(pos: torch.Tensor, neg: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """BPR: mean over valid pairs of -log sigmoid(s_i - s_jk) = log(1 + exp(-(s_i - s_jk)))."""
    return (F.softplus(neg - pos[:, None]) * valid).sum() / valid.sum().clamp(min=1)


class SampledBatchLoss:
    """The configured chain: scores -> hit mask -> (logQ | importance weights) -> loss.

    `kind` picks the loss; `estimator`, `cutoff` and `margin` apply where the loss has ranks. Misuse fails here.
    """

    def __init__(
        self,
        kind: LossKind,
        n_items: int,
        estimator: RankEstimator = "scaled",
        sampling: SamplingKind = "uniform",
        cutoff: int | None = None,
        margin: float = 1.0,
    ):
        if n_items < 2:
            raise ValueError(f"ranking losses need at least 2 items, got n_items={n_items}")
        if cutoff is not None and kind != "lambdarank":
            raise ValueError(f"cutoff applies to kind='lambdarank' only, not {kind!r}")
        self.kind, self.n_items, self.estimator = kind, n_items, estimator
        self.sampling, self.cutoff, self.margin = sampling, cutoff, margin

    def __call__(
        self,
        pos: torch.Tensor,
        neg: torch.Tensor,
        valid: torch.Tensor,
        pos_log_q: torch.Tensor,
        neg_log_q: torch.Tensor,
    ) -> torch.Tensor:
        """Scalar loss of `pos [B]`, `neg [B, m]`, `valid [B, m]`; log Q of the positives `[B]` and negatives `[m]`."""
        importance = torch.exp(-neg_log_q) / (self.n_items - 1) if self.sampling == "popularity" else None
        if self.kind == "lambdarank":
            return lambdarank_loss(pos, neg, valid, self.n_items, self.estimator, self.cutoff, importance)
        if self.kind == "warp":
            return warp_loss(pos, neg, valid, self.n_items, self.estimator, self.margin, importance)
        if self.kind == "softmax":
            return sampled_softmax_loss(pos, neg, valid, pos_log_q, neg_log_q)
        return bpr_loss(pos, neg, valid)
