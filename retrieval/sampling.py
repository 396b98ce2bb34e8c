"""Negatives shared by a whole batch, their sampling log-probabilities, and the accidental-hit mask."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from retrieval.config import SamplingKind


@dataclass(frozen=True)
class SampledNegatives:
    """m item rows drawn with replacement, and `log_q[k]` = log Q(rows[k]), the per-draw probability."""

    rows: torch.Tensor
    log_q: torch.Tensor

    def __len__(self) -> int:
        return int(self.rows.shape[0])


class NegativeSampler:
    """Draws m item rows once per batch, i.i.d. from Q.

    uniform:     Q(j) = 1 / n
    popularity:  Q(j) = (c_j + 1)^alpha / sum_l (c_l + 1)^alpha   (c = training positives; +1 keeps every item
                 reachable, so importance weights stay finite)
    """

    def __init__(
        self,
        n_items: int,
        distribution: SamplingKind = "uniform",
        item_counts: np.ndarray | None = None,
        alpha: float = 0.75,
    ):
        if distribution == "popularity":
            if item_counts is None or len(item_counts) != n_items:
                raise ValueError("popularity sampling needs item_counts of length n_items; pass Split.item_counts()")
            weights = (torch.as_tensor(item_counts, dtype=torch.float64) + 1.0) ** alpha
            self.probs: torch.Tensor | None = (weights / weights.sum()).float()
            self.log_q = torch.log(self.probs)
        else:
            self.probs = None
            self.log_q = torch.full((n_items,), -float(np.log(n_items)))
        self.n_items = n_items

    def sample(self, m: int, generator: torch.Generator | None = None) -> SampledNegatives:
        """`m` rows with replacement: SampledNegatives(rows [m], log_q [m])."""
        if self.probs is None:
            rows = torch.randint(self.n_items, (m,), generator=generator)
        else:
            rows = torch.multinomial(self.probs, m, replacement=True, generator=generator)
        return SampledNegatives(rows, self.log_q[rows])


class PositiveLookup:
    """Known positives of each training user, as sorted keys user * n_items + item, for hit masking."""

    def __init__(self, histories: Sequence[np.ndarray], n_items: int):
        keys = [u * n_items + np.asarray(h, dtype=np.int64) for u, h in enumerate(histories)]
        flat = np.unique(np.concatenate(keys)) if keys else np.zeros(0, np.int64)
        self.keys = torch.from_numpy(flat)
        self.n_items = n_items

    def contains(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """`[B, m]` bool: items[k] is a known positive of users[b] (users index the `histories` given)."""
        query = users[:, None] * self.n_items + items[None, :]
        if len(self.keys) == 0:
            return torch.zeros(query.shape, dtype=torch.bool)
        pos = torch.searchsorted(self.keys, query).clamp_max(len(self.keys) - 1)
        return self.keys[pos] == query
