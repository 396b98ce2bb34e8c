"""Full-catalogue ranking metrics (never sampled): Recall@k and NDCG@k with mean and standard error over users.

Both are truncated by min(k, |targets|) (Liang et al. 2018), so a perfect ranking scores 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from retrieval.models import Bags
from retrieval.splits import HeldOutUsers

ScoreFn = Callable[[Bags], torch.Tensor]  # fold-in histories -> [U, n_items] scores


class MetricEstimate(BaseModel):
    """Mean of a per-user metric, its standard error (std / sqrt(U), ddof 1), and the number of users U."""

    model_config = ConfigDict(frozen=True)

    mean: float
    stderr: float
    n_users: int

    def __str__(self) -> str:
        return f"{self.mean:.4f} ± {self.stderr:.4f}"


def recall_at_k(ranked: np.ndarray, targets: Sequence[np.ndarray], k: int) -> np.ndarray:
    """`[U]` |top-k ∩ targets| / min(k, |targets|); `ranked [U, >=k]` item rows, best first."""
    hits = _hits(ranked[:, :k], targets)
    sizes = np.fromiter((len(t) for t in targets), np.float64, len(targets))
    return hits.sum(1) / np.minimum(k, sizes)


def ndcg_at_k(ranked: np.ndarray, targets: Sequence[np.ndarray], k: int) -> np.ndarray:
    """`[U]` DCG@k / IDCG@k, DCG = sum_{r<=k, hit} 1/log2(r + 1), IDCG = sum_{r<=min(k, |targets|)} 1/log2(r + 1)."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    hits = _hits(ranked[:, :k], targets)
    dcg = (hits * discounts[: hits.shape[1]]).sum(1)
    ideal = np.cumsum(discounts)
    sizes = np.fromiter((min(len(t), k) for t in targets), np.int64, len(targets))
    return dcg / ideal[sizes - 1]


def top_rows(scores: torch.Tensor, exclude: Sequence[np.ndarray], depth: int) -> np.ndarray:
    """`[U, min(depth, n_items)]` item rows by descending score, `exclude[u]` (the fold-in) ranked last.

    Deterministic: ties go to the lower row (a stable sort), so a popularity ranking is reproduced exactly.
    """
    scores = scores.detach().clone()
    for u, rows in enumerate(exclude):
        scores[u, torch.as_tensor(rows, dtype=torch.long)] = -torch.inf
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    return order[:, :depth].numpy()


def summarize(values: np.ndarray) -> MetricEstimate:
    """Mean and standard error of per-user values."""
    stderr = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
    return MetricEstimate(mean=float(values.mean()), stderr=stderr, n_users=len(values))


def evaluate(
    score_fn: ScoreFn,
    users: HeldOutUsers,
    recall_ks: Sequence[int] = (20, 50),
    ndcg_k: int = 100,
    batch_size: int = 1024,
) -> dict[str, MetricEstimate]:
    """`recall@k` for each k and `ndcg@{ndcg_k}` of fold-in scores over the whole catalogue.

    Each user's fold-in items are excluded from the ranking (see `top_rows`).
    """
    depth = max([*recall_ks, ndcg_k])
    ranked = []
    for start in range(0, len(users), batch_size):
        fold_in = users.fold_in[start : start + batch_size]
        with torch.no_grad():
            scores = score_fn(Bags.pack(fold_in))
        ranked.append(top_rows(scores, fold_in, depth))
    top = np.concatenate(ranked)
    result = {f"recall@{k}": summarize(recall_at_k(top, users.targets, k)) for k in recall_ks}
    result[f"ndcg@{ndcg_k}"] = summarize(ndcg_at_k(top, users.targets, ndcg_k))
    return result


def _hits(ranked: np.ndarray, targets: Sequence[np.ndarray]) -> np.ndarray:
    """`[U, k]` float: ranked[u, r] is one of targets[u]."""
    return np.stack([np.isin(row, t) for row, t in zip(ranked, targets, strict=True)]).astype(np.float64)
