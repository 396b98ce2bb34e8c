"""User-item interactions the ILM learns collaborative signal from: time-ordered histories of catalogue rows,
optionally with each user's CF vector. Phase 1 draws IIC and UIC pairs from them, phase 2 its
recommendation tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from retrieval.catalogue import Catalogue
from retrieval.splits import user_histories


@dataclass(frozen=True)
class Interactions:
    """`histories[u]`: item rows of user u ordered by time; `user_embeddings [U, d_cf]` (row u = user u, in the
    CF item space, e.g. the two-tower fold-in of the history) or None when UIC is not used."""

    histories: list[np.ndarray]
    user_embeddings: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.user_embeddings is not None and len(self.user_embeddings) != len(self.histories):
            raise ValueError(
                f"user_embeddings has {len(self.user_embeddings)} rows for {len(self.histories)} histories"
            )

    @classmethod
    def from_positives(cls, positives: pd.DataFrame, catalogue: Catalogue) -> Interactions:
        """Histories from a frame of positives (`user_id`, `item_id`, `timestamp`), users in ascending id order."""
        _, histories = user_histories(positives, catalogue)
        return cls(histories=histories)


def co_interacted_pairs(histories: Sequence[np.ndarray], allowed: np.ndarray | None = None) -> np.ndarray:
    """`[P, 2]` item-row pairs (h[t], h[t+1]) of consecutive items of each time-ordered history.

    Pairs of an item with itself are dropped; with `allowed` (bool `[n_items]`) only pairs of two allowed items
    are kept (e.g. no held-out item).
    """
    pairs = [np.stack([h[:-1], h[1:]], axis=1) for h in histories if len(h) > 1]
    out = np.concatenate(pairs).astype(np.int64) if pairs else np.zeros((0, 2), np.int64)
    keep = out[:, 0] != out[:, 1]
    if allowed is not None:
        keep &= allowed[out[:, 0]] & allowed[out[:, 1]]
    return out[keep]


def user_item_pairs(histories: Sequence[np.ndarray], allowed: np.ndarray | None = None) -> np.ndarray:
    """`[P, 2]` (user index, item row) for every item of every history, optionally only `allowed` items."""
    users = [np.full(len(h), u, np.int64) for u, h in enumerate(histories)]
    if not users:
        return np.zeros((0, 2), np.int64)
    out = np.stack([np.concatenate(users), np.concatenate(histories).astype(np.int64)], axis=1)
    return out if allowed is None else out[allowed[out[:, 1]]]
