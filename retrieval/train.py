"""Training loop: split, sampled-batch loss steps, early stopping on validation NDCG, test metrics beside popularity.

One step takes `batch_users` training users. Two-tower: each user's history is randomly split into an input
(fed to the user tower) and targets (each target is one positive row of the batch), a fold-in rehearsal.
MF: every history item is a target of the user's own vector. The batch's m negatives are shared by all rows.
"""

from __future__ import annotations

import copy
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from tqdm.auto import tqdm

from retrieval.baselines import popularity_scores
from retrieval.config import RetrievalConfig
from retrieval.data import MovieLensData, implicit_positives
from retrieval.errors import ModelFitError
from retrieval.losses import SampledBatchLoss
from retrieval.metrics import MetricEstimate, ScoreFn, evaluate
from retrieval.models import Bags, RetrievalModel, build_model
from retrieval.recommender import TwoTowerRecommender
from retrieval.sampling import NegativeSampler, PositiveLookup
from retrieval.splits import Split, make_split
from retrieval.storage import write_atomic

logger = logging.getLogger(__name__)


class EpochRecord(BaseModel):
    """One epoch: mean training loss, validation NDCG@k (None when not evaluated), wall seconds so far."""

    model_config = ConfigDict(frozen=True)

    epoch: int
    loss: float
    validation_ndcg: float | None
    seconds: float


@dataclass(frozen=True)
class RetrievalTrainResult:
    """The trained recommender, test metrics of it and of popularity (same split), and the per-epoch history."""

    recommender: TwoTowerRecommender
    metrics: dict[str, MetricEstimate]
    popularity_metrics: dict[str, MetricEstimate]
    history: list[EpochRecord]
    best_epoch: int
    split: Split


def train_retrieval(data: MovieLensData, config: RetrievalConfig, progress: bool = True) -> RetrievalTrainResult:
    """Train `config.model` with `config.loss`, keep the epoch with the best validation NDCG@`ndcg_k`, and report
    full-catalogue test Recall@k / NDCG@k (mean and standard error over test users) beside popularity.
    """
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed + 1)
    split = make_split(implicit_positives(data.ratings, config.positive_threshold), data.catalogue, config)
    n_items, counts = split.n_items, split.item_counts()
    model = build_model(config, n_items, len(split.train_items))
    sampler = NegativeSampler(n_items, config.sampling, counts, config.popularity_alpha)
    lookup = PositiveLookup(split.train_items, n_items)
    loss_fn = SampledBatchLoss(
        config.loss, n_items, config.rank_estimator, config.sampling, config.lambdarank_cutoff, config.warp_margin
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    min_items = 2 if model.kind == "two_tower" else 1
    trainable = np.flatnonzero([len(h) >= min_items for h in split.train_items])
    ndcg_key = f"ndcg@{config.ndcg_k}"

    history: list[EpochRecord] = []
    best_ndcg, best_epoch, best_state, stale = -1.0, 0, copy.deepcopy(model.state_dict()), 0
    start = time.perf_counter()
    bar = tqdm(range(1, config.epochs + 1), desc=f"{config.model}/{config.loss}", disable=not progress)
    for epoch in bar:
        model.train()
        order = rng.permutation(trainable)
        losses = []
        for first in range(0, len(order), config.batch_users):
            users = order[first : first + config.batch_users]
            loss = _step(model, split, users, config, sampler, lookup, loss_fn, rng, generator)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        epoch_loss = float(np.mean(losses))
        if not np.isfinite(epoch_loss):
            raise ModelFitError(
                f"loss became {epoch_loss} at epoch {epoch}; lower learning_rate ({config.learning_rate})"
            )
        ndcg = None
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            ndcg = evaluate(_model_scores(model), split.validation, (), config.ndcg_k)[ndcg_key].mean
            if ndcg > best_ndcg:
                best_ndcg, best_epoch, best_state, stale = ndcg, epoch, copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
        history.append(
            EpochRecord(epoch=epoch, loss=epoch_loss, validation_ndcg=ndcg, seconds=time.perf_counter() - start)
        )
        bar.set_postfix(loss=f"{epoch_loss:.4f}", val_ndcg=f"{best_ndcg:.4f}", best=best_epoch)
        if stale >= config.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    metrics = evaluate(_model_scores(model), split.test, config.recall_ks, config.ndcg_k)
    popularity_metrics = evaluate(popularity_scores(counts), split.test, config.recall_ks, config.ndcg_k)
    logger.info("best epoch %d; test %s; popularity %s", best_epoch, _fmt(metrics), _fmt(popularity_metrics))
    recommender = TwoTowerRecommender(data.catalogue, model, config, counts)
    return RetrievalTrainResult(recommender, metrics, popularity_metrics, history, best_epoch, split)


def plot_history(history: list[EpochRecord], path: Path) -> None:
    """Write a PNG of training loss and validation NDCG per epoch to `path`, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (ax_loss, ax_ndcg) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax_loss.plot([r.epoch for r in history], [r.loss for r in history])
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    evaluated = [r for r in history if r.validation_ndcg is not None]
    ax_ndcg.plot([r.epoch for r in evaluated], [r.validation_ndcg for r in evaluated], marker=".")
    ax_ndcg.set(xlabel="epoch", ylabel="NDCG", title="validation NDCG")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    write_atomic(Path(path), buffer.getvalue())


def _step(
    model: RetrievalModel,
    split: Split,
    users: np.ndarray,
    config: RetrievalConfig,
    sampler: NegativeSampler,
    lookup: PositiveLookup,
    loss_fn: SampledBatchLoss,
    rng: np.random.Generator,
    generator: torch.Generator,
) -> torch.Tensor:
    """Loss of one batch of training users (indices into split.train_items)."""
    if model.kind == "two_tower":
        inputs, row_user, targets = _fold_in_rehearsal(split, users, config.input_dropout, rng)
        user_vectors = model.user_vectors(inputs)
    else:
        lengths = [len(split.train_items[u]) for u in users]
        row_user = torch.from_numpy(np.repeat(np.arange(len(users)), lengths))
        targets = torch.from_numpy(np.concatenate([split.train_items[u] for u in users]))
        user_vectors = model.user_vectors(torch.from_numpy(users))
    negatives = sampler.sample(config.num_negatives, generator)
    items = model.item_vectors()
    queries = user_vectors[row_user]  # [B, d]
    pos = (queries * items[targets]).sum(-1)  # [B]
    neg = queries @ items[negatives.rows].T  # [B, m]: the sampled batch, one matmul
    if config.remove_accidental_hits:
        valid = ~lookup.contains(torch.from_numpy(users)[row_user], negatives.rows)
    else:
        valid = torch.ones_like(neg, dtype=torch.bool)
    return loss_fn(pos, neg, valid, sampler.log_q[targets], negatives.log_q)


def _fold_in_rehearsal(
    split: Split, users: np.ndarray, dropout: float, rng: np.random.Generator
) -> tuple[Bags, torch.Tensor, torch.Tensor]:
    """Hide each history item with probability `dropout` (at least one hidden, one kept per user).

    Returns (input bags [U], row_user [B] index into the U users, target rows [B]) over all hidden items.
    """
    inputs, row_user, targets = [], [], []
    for u, user in enumerate(users):
        items = split.train_items[user]
        hidden = rng.random(len(items)) < dropout
        if hidden.all():
            hidden[rng.integers(len(items))] = False
        if not hidden.any():
            hidden[rng.integers(len(items))] = True
        inputs.append(items[~hidden])
        targets.append(items[hidden])
        row_user.append(np.full(int(hidden.sum()), u))
    return Bags.pack(inputs), torch.from_numpy(np.concatenate(row_user)), torch.from_numpy(np.concatenate(targets))


def _model_scores(model: RetrievalModel) -> ScoreFn:
    return lambda bags: model.fold_in(bags) @ model.item_vectors().T


def _fmt(metrics: dict[str, MetricEstimate]) -> str:
    return ", ".join(f"{name} {value}" for name, value in metrics.items())
