"""Peer recommenders as `ScoreFn`s (fold-in histories -> `[U, n_items]` scores) for the same full-catalogue
`evaluate` as ours: popularity, implicit's ALS and BPR, LightFM's WARP. EASE lives in `retrieval.ease`.

Fold-in of a held-out user:
- popularity: none needed;
- ALS: implicit's `recalculate_user`, the exact least-squares user solve against fixed item factors;
- BPR and LightFM have none, so they are trained with the held-out users' fold-in histories as extra rows
  (`rows_with_fold_in`; never their targets) and score a history by the row trained on it. This gives them
  more training data than our fold-in models get, never less.

implicit and lightfm are optional (`pip install 'ilmrec[benchmark]'`) and imported only when used.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from retrieval.metrics import ScoreFn
from retrieval.models import Bags
from retrieval.splits import Split

INSTALL_HINT = "pip install 'ilmrec[benchmark]'"


def popularity_scores(counts: np.ndarray) -> ScoreFn:
    """Every history scores item i by its training positive count c_i."""
    scores = torch.from_numpy(np.asarray(counts, dtype=np.float32))
    return lambda bags: scores.expand(len(bags), -1)


def interaction_matrix(histories: Sequence[np.ndarray], n_items: int, weights: Sequence[np.ndarray] | None = None):
    """scipy CSR `[len(histories), n_items]` float32, entry (u, i) = weight of item i in history u (default 1)."""
    from scipy.sparse import csr_matrix

    bags = Bags.pack(histories, weights)
    indptr = np.append(bags.offsets.numpy(), len(bags.rows))
    return csr_matrix((bags.weights.numpy(), bags.rows.numpy(), indptr), shape=(len(histories), n_items))


def rows_with_fold_in(split: Split) -> list[np.ndarray]:
    """Training histories, then every validation and test fold-in history not already among them."""
    seen = {_key(h) for h in split.train_items}
    extra: dict[bytes, np.ndarray] = {}
    for history in [*split.validation.fold_in, *split.test.fold_in]:
        if _key(history) not in seen:
            extra.setdefault(_key(history), history)
    return [*split.train_items, *extra.values()]


class TrainedRowScores:
    """Scores a history by the user factors of the row trained on it: s = p_row q_i + b_i.

    Raises KeyError for a history no row was trained on (these models cannot fold in).
    """

    def __init__(
        self,
        histories: Sequence[np.ndarray],
        user_factors: np.ndarray,
        item_factors: np.ndarray,
        item_bias: np.ndarray | None = None,
    ):
        self.row_of = {_key(h): r for r, h in reversed(list(enumerate(histories)))}
        self.user_factors = torch.from_numpy(np.asarray(user_factors, np.float32))
        self.item_factors = torch.from_numpy(np.asarray(item_factors, np.float32))
        bias = np.zeros(len(item_factors), np.float32) if item_bias is None else item_bias
        self.item_bias = torch.from_numpy(np.asarray(bias, np.float32))

    def __call__(self, bags: Bags) -> torch.Tensor:
        try:
            rows = [self.row_of[_key(h)] for h in bags.histories()]
        except KeyError:
            raise KeyError("a history no row was trained on; train with rows_with_fold_in(split)") from None
        return self.user_factors[rows] @ self.item_factors.T + self.item_bias


class ImplicitALS:
    """implicit's iALS (confidence 1 + alpha x): fit on training histories, fold in by its least-squares solve."""

    def __init__(
        self, factors: int, regularization: float, alpha: float, iterations: int, seed: int = 0, threads: int = 2
    ):
        als = _require("implicit.cpu.als", "implicit")
        with _single_threaded_blas():  # implicit checks the BLAS pool here
            self.model = als.AlternatingLeastSquares(
                factors=factors,
                regularization=regularization,
                alpha=alpha,
                iterations=iterations,
                random_state=seed,
                num_threads=threads,
                calculate_training_loss=False,
            )

    def fit(self, histories: Sequence[np.ndarray], n_items: int) -> ImplicitALS:
        self.n_items = n_items
        with _single_threaded_blas():
            self.model.fit(interaction_matrix(histories, n_items), show_progress=False)
        return self

    def __call__(self, bags: Bags) -> torch.Tensor:
        """`[U, n_items]` <p_u, q_i> with p_u = recalculate_user(history u)."""
        histories = bags.histories()
        with _single_threaded_blas():
            users = self.model.recalculate_user(np.arange(len(histories)), interaction_matrix(histories, self.n_items))
        return torch.from_numpy(np.asarray(users @ self.model.item_factors.T, np.float32))


def implicit_bpr(
    histories: Sequence[np.ndarray],
    n_items: int,
    factors: int,
    learning_rate: float,
    regularization: float,
    iterations: int,
    seed: int = 0,
    threads: int = 2,
) -> TrainedRowScores:
    """implicit's BPR trained on `histories` (pass `rows_with_fold_in(split)`); its last factor is the item bias."""
    bpr = _require("implicit.cpu.bpr", "implicit")
    model = bpr.BayesianPersonalizedRanking(
        factors=factors,
        learning_rate=learning_rate,
        regularization=regularization,
        iterations=iterations,
        random_state=seed,
        num_threads=threads,
    )
    model.fit(interaction_matrix(histories, n_items), show_progress=False)
    return TrainedRowScores(histories, model.user_factors, model.item_factors)


class LightFMWarp:
    """LightFM with loss='warp' (no side features), trained one epoch at a time on `histories`
    (pass `rows_with_fold_in(split)`), so the caller can early-stop on validation."""

    def __init__(
        self,
        histories: Sequence[np.ndarray],
        n_items: int,
        components: int,
        learning_rate: float,
        max_sampled: int = 10,
        seed: int = 0,
        threads: int = 2,
    ):
        lightfm = _require("lightfm", "lightfm")
        self.histories, self.threads = list(histories), threads
        self.interactions = interaction_matrix(self.histories, n_items).tocoo()
        self.model = lightfm.LightFM(
            no_components=components,
            loss="warp",
            learning_rate=learning_rate,
            max_sampled=max_sampled,
            random_state=seed,
        )

    def fit_epoch(self) -> None:
        self.model.fit_partial(self.interactions, epochs=1, num_threads=self.threads)

    def scores(self) -> TrainedRowScores:
        """The current model as a ScoreFn (a snapshot: later epochs do not change it)."""
        m = self.model
        return TrainedRowScores(
            self.histories, m.user_embeddings.copy(), m.item_embeddings.copy(), m.item_biases.copy()
        )


def _single_threaded_blas():
    """implicit runs its own threads; a BLAS thread pool beside them slows it down (implicit warns about it)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, "blas")


def _key(history: np.ndarray) -> bytes:
    return np.sort(np.asarray(history, np.int64)).tobytes()


def _require(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{package} is missing ({exc}); {INSTALL_HINT}") from None
