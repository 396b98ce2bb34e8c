"""Evaluation splits of implicit positives: strong generalisation (held-out users) and temporal leave-last-out.

Items are dense catalogue rows here; every history is ordered by (timestamp, row).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from retrieval.catalogue import Catalogue
from retrieval.config import RetrievalConfig, SplitKind
from retrieval.errors import DataError


@dataclass(frozen=True)
class HeldOutUsers:
    """Users scored by fold-in: `fold_in[u]` is given to the model, `targets[u]` must be retrieved (item rows)."""

    user_ids: np.ndarray
    fold_in: list[np.ndarray]
    targets: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.user_ids)


@dataclass(frozen=True)
class Split:
    """Training histories plus validation and test users. `train_items[u]` belongs to `train_user_ids[u]`."""

    kind: SplitKind
    n_items: int
    train_user_ids: np.ndarray
    train_items: list[np.ndarray]
    validation: HeldOutUsers
    test: HeldOutUsers

    def item_counts(self) -> np.ndarray:
        """Training positives per item row, `[n_items]` int64 (the popularity baseline's scores)."""
        rows = np.concatenate(self.train_items) if self.train_items else np.zeros(0, np.int64)
        return np.bincount(rows, minlength=self.n_items).astype(np.int64)


def user_histories(positives: pd.DataFrame, catalogue: Catalogue) -> tuple[np.ndarray, list[np.ndarray]]:
    """Group positives by user: (`[U]` user ids ascending, per-user item rows ordered by timestamp then row)."""
    rows = catalogue.rows(positives["item_id"].to_numpy()) if len(positives) else np.zeros(0, np.int64)
    frame = pd.DataFrame({"user": positives["user_id"].to_numpy(), "t": positives["timestamp"].to_numpy(), "row": rows})
    frame = frame.sort_values(["user", "t", "row"], kind="stable")
    users, starts = np.unique(frame["user"].to_numpy(), return_index=True)
    return users, np.split(frame["row"].to_numpy(np.int64, copy=True), starts[1:]) if len(users) else []


def make_split(positives: pd.DataFrame, catalogue: Catalogue, config: RetrievalConfig) -> Split:
    """The split `config.split` names, with the config's fractions and seed."""
    if config.split == "temporal":
        return temporal_split(positives, catalogue)
    return strong_generalization_split(
        positives,
        catalogue,
        heldout_fraction=config.heldout_user_fraction,
        max_heldout_users=config.max_heldout_users,
        min_user_positives=config.min_user_positives,
        fold_in_fraction=config.fold_in_fraction,
        seed=config.seed,
    )


def strong_generalization_split(
    positives: pd.DataFrame,
    catalogue: Catalogue,
    heldout_fraction: float = 0.1,
    max_heldout_users: int = 10_000,
    min_user_positives: int = 5,
    fold_in_fraction: float = 0.8,
    seed: int = 0,
) -> Split:
    """Hold out whole users (Liang et al. 2018): validation and test each get
    clamp(round(heldout_fraction * U), 1, max_heldout_users) users drawn from those with at least
    `min_user_positives` positives; each held-out user's positives are shuffled and
    max(1, round((1 - fold_in_fraction) * n)) of them become targets, the rest the fold-in history.
    """
    users, histories = user_histories(positives, catalogue)
    eligible = np.flatnonzero(np.fromiter((len(h) >= min_user_positives for h in histories), bool, len(histories)))
    n_heldout = int(np.clip(round(heldout_fraction * len(users)), 1, max_heldout_users))
    if len(eligible) < 2 * n_heldout + 1:
        raise DataError(
            f"only {len(eligible)} users have >= {min_user_positives} positives, too few to hold out 2 x {n_heldout}; "
            "lower min_user_positives or heldout_user_fraction"
        )
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(eligible)
    validation_idx, test_idx = np.sort(chosen[:n_heldout]), np.sort(chosen[n_heldout : 2 * n_heldout])
    heldout = np.zeros(len(users), bool)
    heldout[chosen[: 2 * n_heldout]] = True

    def fold(indices: np.ndarray) -> HeldOutUsers:
        fold_in, targets = [], []
        for idx in indices:
            items = rng.permutation(histories[idx])
            n_targets = max(1, round((1.0 - fold_in_fraction) * len(items)))
            fold_in.append(np.sort(items[n_targets:]))
            targets.append(np.sort(items[:n_targets]))
        return HeldOutUsers(users[indices], fold_in, targets)

    validation, test = fold(validation_idx), fold(test_idx)
    train = np.flatnonzero(~heldout)
    return Split("strong", len(catalogue), users[train], [histories[i] for i in train], validation, test)


def temporal_split(positives: pd.DataFrame, catalogue: Catalogue) -> Split:
    """Leave-last-out by time: for users with >= 3 positives the last one is the test target (fold-in: all
    earlier ones) and the one before it the validation target (fold-in: all earlier ones); training keeps all
    but the last two. Users with fewer positives train on everything. Ties in time are broken by item row.
    """
    users, histories = user_histories(positives, catalogue)
    scored = np.flatnonzero(np.fromiter((len(h) >= 3 for h in histories), bool, len(histories)))
    if len(scored) == 0:
        raise DataError("no user has 3 positives, so leave-last-out has nothing to score; use split='strong'")
    train_items = [h[:-2] if len(h) >= 3 else h for h in histories]
    validation = HeldOutUsers(users[scored], [histories[i][:-2] for i in scored], [histories[i][-2:-1] for i in scored])
    test = HeldOutUsers(users[scored], [histories[i][:-1] for i in scored], [histories[i][-1:] for i in scored])
    return Split("temporal", len(catalogue), users, train_items, validation, test)
