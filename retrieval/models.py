"""Scoring models: s(u, i) = <user vector, item vector>, with fold-in of an unseen history (a new user, a chat).

Histories travel as *bags*: `rows [N]` item rows of all histories concatenated, `offsets [U]` where each
history starts, `weights [N]` per item (1 = liked, negative = disliked). A bag is one user.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from retrieval.config import RetrievalConfig


@dataclass(frozen=True)
class Bags:
    """Histories packed for `nn.EmbeddingBag`: rows `[N]`, offsets `[U]`, weights `[N]` float."""

    rows: torch.Tensor
    offsets: torch.Tensor
    weights: torch.Tensor

    @classmethod
    def pack(cls, histories: Sequence[np.ndarray], weights: Sequence[np.ndarray] | None = None) -> Bags:
        """Pack per-user item rows (and optional per-item weights, default 1) into one Bags."""
        lengths = np.fromiter((len(h) for h in histories), np.int64, len(histories))
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        rows = np.concatenate(histories).astype(np.int64) if len(histories) else np.zeros(0, np.int64)
        flat = np.concatenate(weights).astype(np.float32) if weights is not None else np.ones(len(rows), np.float32)
        if len(flat) != len(rows):
            raise ValueError(f"weights hold {len(flat)} values for {len(rows)} history items; give one per item")
        return cls(torch.from_numpy(rows), torch.from_numpy(offsets), torch.from_numpy(flat))

    def __len__(self) -> int:
        return int(self.offsets.shape[0])

    def to(self, device: torch.device | str) -> Bags:
        """These bags on `device`."""
        return Bags(self.rows.to(device), self.offsets.to(device), self.weights.to(device))

    def bag_of_entries(self) -> torch.Tensor:
        """`[N]` the bag (user) each entry of `rows` belongs to."""
        entries = torch.arange(len(self.rows), device=self.rows.device)
        return torch.bucketize(entries, self.offsets, right=True) - 1

    def histories(self) -> list[np.ndarray]:
        """The packed item rows again, one array per bag (the inverse of `pack`)."""
        bounds = [*self.offsets.tolist(), len(self.rows)]
        rows = self.rows.cpu().numpy()
        return [rows[a:b] for a, b in itertools.pairwise(bounds)]

    def weight_mass(self) -> torch.Tensor:
        """`[U]` sum_h |w_h| per bag (0 for an empty bag)."""
        mass = torch.zeros(len(self), dtype=self.weights.dtype, device=self.weights.device)
        return mass.index_add_(0, self.bag_of_entries(), self.weights.abs())


class BagOfItemsTwoTower(nn.Module):
    """User tower: u = W (sum_h w_h e_h / sum_h |w_h|) over an input-item table e (W optional, else identity);
    item tower: the output-item table q_i. Score s(u, i) = <u, q_i>. Disliked items (w < 0) push u away.

    An empty (or all-zero-weight) history gives u = 0.
    """

    kind = "two_tower"

    def __init__(self, n_items: int, dim: int, projection: bool = False, init_std: float = 0.05):
        super().__init__()
        self.input_items = nn.EmbeddingBag(n_items, dim, mode="sum")
        self.output_items = nn.Embedding(n_items, dim)
        self.projection = nn.Linear(dim, dim, bias=False) if projection else None
        nn.init.normal_(self.input_items.weight, std=init_std)
        nn.init.normal_(self.output_items.weight, std=init_std)
        if self.projection is not None:
            nn.init.eye_(self.projection.weight)

    def user_vectors(self, bags: Bags) -> torch.Tensor:
        """`[U, d]` pooled history vectors (differentiable: training uses the same path as fold-in)."""
        summed = self.input_items(bags.rows, bags.offsets, per_sample_weights=bags.weights)
        pooled = summed / bags.weight_mass().clamp(min=1e-12)[:, None]
        return pooled if self.projection is None else self.projection(pooled)

    def fold_in(self, bags: Bags) -> torch.Tensor:
        """`[U, d]` user vectors of unseen histories, no retraining."""
        return self.user_vectors(bags)

    def item_vectors(self) -> torch.Tensor:
        """`[n_items, d]` the item tower's table."""
        return self.output_items.weight


class MatrixFactorization(nn.Module):
    """s(u, i) = <p_u, q_i> with a user table p over training users and an item table q.

    Fold-in of an unseen history (iALS-style ridge, Rendle et al. 2022), with c_h = |w_h|, y_h = sign(w_h):
        p = argmin sum_h c_h (y_h - <p, q_h>)^2 + alpha0 sum_i <p, q_i>^2 + lambda |p|^2
          = (sum_h c_h q_h q_h^T + alpha0 Q^T Q + lambda I)^-1 sum_h w_h q_h.
    """

    kind = "mf"

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int,
        init_std: float = 0.05,
        fold_in_l2: float = 1.0,
        fold_in_unobserved_weight: float = 0.1,
    ):
        super().__init__()
        self.users = nn.Embedding(n_users, dim)
        self.output_items = nn.Embedding(n_items, dim)
        nn.init.normal_(self.users.weight, std=init_std)
        nn.init.normal_(self.output_items.weight, std=init_std)
        self.fold_in_l2, self.fold_in_unobserved_weight = fold_in_l2, fold_in_unobserved_weight

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """`[U, d]` learned vectors of training users (indices into the user table)."""
        return self.users(users)

    def fold_in(self, bags: Bags) -> torch.Tensor:
        """`[U, d]` ridge solutions for unseen histories (see the class docstring); 0 for an empty bag."""
        q = self.output_items.weight.detach()
        identity = torch.eye(q.shape[1], dtype=q.dtype, device=q.device)
        gram = self.fold_in_unobserved_weight * q.T @ q + self.fold_in_l2 * identity
        lengths = torch.diff(bags.offsets.cpu(), append=torch.tensor([len(bags.rows)], device="cpu")).tolist()
        a, b = [], []
        for rows, weights in zip(bags.rows.split(lengths), bags.weights.split(lengths), strict=True):
            q_h = q[rows]
            a.append(gram + q_h.T @ (weights.abs()[:, None] * q_h))
            b.append(q_h.T @ weights)
        if not a:
            return torch.zeros(0, q.shape[1], dtype=q.dtype, device=q.device)
        a, b = torch.stack(a), torch.stack(b)
        return torch.linalg.solve(a, b)

    def item_vectors(self) -> torch.Tensor:
        """`[n_items, d]` the item table."""
        return self.output_items.weight


RetrievalModel = BagOfItemsTwoTower | MatrixFactorization


class SampledBatchScorer(nn.Module):
    """The training forward pass of a `RetrievalModel` as one module (what DDP wraps):

        pos[b] = <u_{row_user[b]}, q_{targets[b]}>   `[B]`,   neg[b, k] = <u_{row_user[b]}, q_{negatives[k]}>   `[B, m]`

    (the m negatives shared by the batch, scored with one matmul). `users` is what the model's user tower takes:
    `Bags` of input histories for the two-tower model, user-table indices `[U]` for MF.
    """

    def __init__(self, model: RetrievalModel):
        super().__init__()
        self.model = model

    def forward(
        self, users: Bags | torch.Tensor, row_user: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        items = self.model.item_vectors()
        queries = self.model.user_vectors(users)[row_user]  # [B, d]
        return (queries * items[targets]).sum(-1), queries @ items[negatives].T


def build_model(config: RetrievalConfig, n_items: int, n_users: int) -> RetrievalModel:
    """The model `config.model` names (`n_users` sizes MF's user table; the two-tower needs none)."""
    if config.model == "mf":
        return MatrixFactorization(
            n_users, n_items, config.embedding_dim, config.init_std, config.fold_in_l2, config.fold_in_unobserved_weight
        )
    return BagOfItemsTwoTower(n_items, config.embedding_dim, config.user_projection, config.init_std)
