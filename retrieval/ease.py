"""EASE (Steck, WWW 2019): a closed-form item-item linear autoencoder, the strongest simple baseline.

    B = argmin_B ||X - X B||_F^2 + lambda ||B||_F^2   subject to diag(B) = 0
      = I - P diag(1 / diag(P)),   P = (X^T X + lambda I)^-1        (a Lagrange multiplier per diagonal entry)

X is the binary training matrix `[users, n_items]`. Fold-in is free: a history x `[n_items]` scores x B.
Items without a training positive have a zero column and row in X^T X, so their rows and columns of B are 0:
solving over the active items only and scoring the others 0 is exact, and much cheaper.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from retrieval.models import Bags


def gram_matrix(histories: Sequence[np.ndarray], items: np.ndarray, batch_users: int = 4096) -> np.ndarray:
    """`[len(items), len(items)]` float64 G = X^T X over the columns `items` (sorted rows), X binary.

    History rows outside `items` are ignored. Accumulated over dense user batches, so memory stays at
    batch_users x len(items) plus G.
    """
    gram = np.zeros((len(items), len(items)))
    for start in range(0, len(histories), batch_users):
        chunk = histories[start : start + batch_users]
        x = np.zeros((len(chunk), len(items)))
        for u, rows in enumerate(chunk):
            columns = np.searchsorted(items, rows).clip(max=max(len(items) - 1, 0))
            x[u, columns[items[columns] == rows]] = 1.0
        gram += x.T @ x
    return gram


def ease_weights(gram: np.ndarray, l2: float) -> np.ndarray:
    """`[n, n]` B = I - P diag(1 / diag(P)), P = (G + l2 I)^-1; diag(B) = 0 exactly."""
    if l2 <= 0:
        raise ValueError(f"EASE needs l2 > 0 (G alone is singular), got {l2}")
    precision = np.linalg.inv(gram + l2 * np.eye(len(gram)))
    weights = -precision / np.diag(precision)[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights


class EASE:
    """EASE fitted on training histories (item rows); `scores(bags)` folds in any history, no retraining."""

    def __init__(self, histories: Sequence[np.ndarray], n_items: int, l2: float, gram: np.ndarray | None = None):
        """`gram` may be passed (G over `active_items(histories, n_items)`) to tune l2 without recomputing it."""
        self.n_items = n_items
        self.items = active_items(histories, n_items)
        gram = gram_matrix(histories, self.items) if gram is None else gram
        if gram.shape != (len(self.items), len(self.items)):
            raise ValueError(f"gram is {gram.shape}; expected G over the {len(self.items)} active items")
        self.weights = torch.from_numpy(ease_weights(gram, l2).astype(np.float32))
        self._column = torch.full((n_items,), -1, dtype=torch.long)
        self._column[torch.from_numpy(self.items)] = torch.arange(len(self.items))

    def scores(self, bags: Bags) -> torch.Tensor:
        """`[U, n_items]` x B for each history x (weights as given: 1 liked, < 0 disliked); 0 for inactive items."""
        columns = self._column[bags.rows]
        known = columns >= 0
        users = bags.bag_of_entries()
        x = torch.zeros(len(bags), len(self.items))
        x.index_put_((users[known], columns[known]), bags.weights[known], accumulate=True)
        out = torch.zeros(len(bags), self.n_items)
        out[:, torch.from_numpy(self.items)] = x @ self.weights
        return out


def active_items(histories: Sequence[np.ndarray], n_items: int) -> np.ndarray:
    """Sorted item rows with at least one training positive."""
    rows = np.concatenate(histories) if len(histories) else np.zeros(0, np.int64)
    return np.flatnonzero(np.bincount(rows, minlength=n_items))
