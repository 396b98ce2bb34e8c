"""Training loop: split, sampled-batch loss steps, early stopping on validation NDCG, test metrics beside popularity.

One step takes `batch_users` training users. Two-tower: each user's history is randomly split into an input
(fed to the user tower) and targets (each target is one positive row of the batch), a fold-in rehearsal.
MF: every history item is a target of the user's own vector. The batch's m negatives are shared by all rows.

Data-parallel training (`replicas=`, see `retrieval.distributed`; launched by `retrieval.train_distributed`):
every replica draws the same permutation, masks and negatives and trains on its shard of each batch's users.

`device=` places the model, its scores and the loss (a GPU); the random draws (users, fold-in masks, negatives)
and the accidental-hit lookup stay on the CPU, so a run draws the same batches on any device. The returned
recommender is on the CPU (serving and `save` read CPU tensors).
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
from tqdm.auto import tqdm

from retrieval.baselines import popularity_scores
from retrieval.checkpoint import EpochRecord, Progress, RunKey, Trainee, load_checkpoint, save_checkpoint
from retrieval.config import RetrievalConfig
from retrieval.data import MovieLensData, implicit_positives
from retrieval.distributed import Replicas
from retrieval.errors import ModelFitError
from retrieval.losses import SampledBatchLoss
from retrieval.metrics import MetricEstimate, ScoreFn, evaluate
from retrieval.models import Bags, RetrievalModel, SampledBatchScorer, build_model
from retrieval.recommender import TwoTowerRecommender
from retrieval.sampling import NegativeSampler, PositiveLookup
from retrieval.splits import Split, make_split
from retrieval.storage import write_atomic

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrievalTrainResult:
    """The trained recommender, test metrics of it and of popularity (same split), and the per-epoch history."""

    recommender: TwoTowerRecommender
    metrics: dict[str, MetricEstimate]
    popularity_metrics: dict[str, MetricEstimate]
    history: list[EpochRecord]
    best_epoch: int
    split: Split


def train_retrieval(
    data: MovieLensData,
    config: RetrievalConfig,
    progress: bool = True,
    replicas: Replicas | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    checkpoint_every: int = 1,
    device: torch.device | str = "cpu",
) -> RetrievalTrainResult:
    """Train `config.model` with `config.loss`, keep the epoch with the best validation NDCG@`ndcg_k`, and report
    full-catalogue test Recall@k / NDCG@k (mean and standard error over test users) beside popularity.

    With `replicas` (one per process of an initialised process group) each trains on its shard of every batch,
    rank 0 evaluates, and all return rank 0's result; the default is one process. `device` is where the model
    trains (`retrieval.device.resolve_device` turns a setting into one); the result is on the CPU.

    With `checkpoint_dir`, every `checkpoint_every` epochs (and the last) the whole training state is written
    there atomically (`retrieval.checkpoint`; rank 0 writes). `resume=True` continues from that checkpoint when
    there is one, with the same result as an uninterrupted run; one of another config or data is refused.
    """
    replicas = replicas or Replicas()
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed + 1)
    split = make_split(implicit_positives(data.ratings, config.positive_threshold), data.catalogue, config)
    n_items, counts = split.n_items, split.item_counts()
    device = torch.device(device)
    model = build_model(config, n_items, len(split.train_items)).to(device)
    sampler = NegativeSampler(n_items, config.sampling, counts, config.popularity_alpha)
    lookup = PositiveLookup(split.train_items, n_items)
    loss_fn = SampledBatchLoss(
        config.loss, n_items, config.rank_estimator, config.sampling, config.lambdarank_cutoff, config.warp_margin
    )
    # fused: one kernel over the whole item tables; the default per-tensor loop is ~10x slower on CPU
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, fused=True
    )
    min_items = 2 if model.kind == "two_tower" else 1
    trainable = np.flatnonzero([len(h) >= min_items for h in split.train_items])
    ndcg_key = f"ndcg@{config.ndcg_k}"
    scorer = replicas.wrap(SampledBatchScorer(model))

    trainee = Trainee(model, optimizer, generator, rng)
    run = RunKey.of(config, data) if checkpoint_dir else None
    state, best_state = Progress(), copy.deepcopy(model.state_dict())
    resumed = load_checkpoint(checkpoint_dir, trainee, run) if checkpoint_dir and resume else None
    if resumed is not None:
        state, best_state = resumed.progress, resumed.best_state
        logger.info("retrieval training resumed from epoch %d (%s)", state.epoch, checkpoint_dir)
    start = time.perf_counter() - (state.history[-1].seconds if state.history else 0.0)
    bar = tqdm(
        range(state.epoch + 1, config.epochs + 1),
        desc=f"{config.model}/{config.loss}",
        disable=not (progress and replicas.is_main),
    )
    for epoch in bar:
        if state.stale >= config.patience:
            break
        model.train()
        order = rng.permutation(trainable)
        losses = []
        for first in range(0, len(order), config.batch_users):
            batch = _batch(model, split, order[first : first + config.batch_users], config.input_dropout, rng, replicas)
            loss = batch.scale * _loss(scorer, batch, config, sampler, lookup, loss_fn, generator, device)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        epoch_loss = replicas.mean(float(np.mean(losses)))
        if not np.isfinite(epoch_loss):
            raise ModelFitError(
                f"loss became {epoch_loss} at epoch {epoch}; lower learning_rate ({config.learning_rate})"
            )
        ndcg = None
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            ndcg = replicas.from_main(
                lambda: evaluate(_model_scores(model), split.validation, (), config.ndcg_k)[ndcg_key].mean
            )
            if ndcg > state.best_ndcg:
                state.best_ndcg, state.best_epoch, state.stale = ndcg, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                state.stale += 1
        state.epoch = epoch
        state.history.append(
            EpochRecord(epoch=epoch, loss=epoch_loss, validation_ndcg=ndcg, seconds=time.perf_counter() - start)
        )
        last = epoch == config.epochs or state.stale >= config.patience
        if checkpoint_dir and run and replicas.is_main and (epoch % checkpoint_every == 0 or last):
            save_checkpoint(checkpoint_dir, trainee, state, best_state, run)
        bar.set_postfix(loss=f"{epoch_loss:.4f}", val_ndcg=f"{state.best_ndcg:.4f}", best=state.best_epoch)
    model.load_state_dict(best_state)
    model.eval().cpu()
    metrics, popularity_metrics = replicas.from_main(
        lambda: (
            evaluate(_model_scores(model), split.test, config.recall_ks, config.ndcg_k),
            evaluate(popularity_scores(counts), split.test, config.recall_ks, config.ndcg_k),
        )
    )
    logger.info("best epoch %d; test %s; popularity %s", state.best_epoch, _fmt(metrics), _fmt(popularity_metrics))
    recommender = TwoTowerRecommender(data.catalogue, model, config, counts)
    return RetrievalTrainResult(recommender, metrics, popularity_metrics, state.history, state.best_epoch, split)


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


@dataclass(frozen=True)
class _Batch:
    """This replica's part of one batch, on the CPU: user-tower input `[U]`, `row_user [B]` (index into the U
    users), `targets [B]` item rows, `users [U]` training-user indices, and its loss scale c_r (1 in one process)."""

    inputs: Bags | torch.Tensor
    row_user: torch.Tensor
    targets: torch.Tensor
    users: np.ndarray
    scale: float


def _batch(
    model: RetrievalModel,
    split: Split,
    users: np.ndarray,
    dropout: float,
    rng: np.random.Generator,
    replicas: Replicas,
) -> _Batch:
    """The batch of training users `users` as this replica trains it.

    Two-tower: each history item is hidden with probability `dropout` (at least one hidden, one kept per user);
    hidden items are targets, kept ones the input. MF: every history item is a target of the user's own vector.
    Masks are drawn for the whole batch on every replica (so all consume `rng` alike), then the replica keeps
    its shard. A replica whose shard is empty trains on the batch's first user with scale 0 (DDP needs every
    replica to take part in each gradient all-reduce).
    """
    histories = [split.train_items[u] for u in users]
    if model.kind == "two_tower":
        hidden = [_hidden_mask(len(items), dropout, rng) for items in histories]
        rows = np.array([int(h.sum()) for h in hidden])
    else:
        hidden = [np.ones(len(items), bool) for items in histories]
        rows = np.array([len(items) for items in histories])
    mine = replicas.shard(np.arange(len(users)))
    scale = replicas.loss_scale(int(rows[mine].sum()), int(rows.sum())) if len(mine) else 0.0
    mine = mine if len(mine) else np.arange(1)
    row_user = torch.from_numpy(np.repeat(np.arange(len(mine)), rows[mine]))
    targets = torch.from_numpy(np.concatenate([histories[i][hidden[i]] for i in mine]))
    if model.kind == "two_tower":
        inputs: Bags | torch.Tensor = Bags.pack([histories[i][~hidden[i]] for i in mine])
    else:
        inputs = torch.from_numpy(users[mine])
    return _Batch(inputs, row_user, targets, users[mine], scale)


def _hidden_mask(n: int, dropout: float, rng: np.random.Generator) -> np.ndarray:
    """`[n]` bool, each True with probability `dropout`, with at least one True and one False."""
    hidden = rng.random(n) < dropout
    if hidden.all():
        hidden[rng.integers(n)] = False
    if not hidden.any():
        hidden[rng.integers(n)] = True
    return hidden


def _loss(
    scorer: torch.nn.Module,
    batch: _Batch,
    config: RetrievalConfig,
    sampler: NegativeSampler,
    lookup: PositiveLookup,
    loss_fn: SampledBatchLoss,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """Sampled-batch loss of `batch` (mean over its rows), with m negatives shared by all its rows; negatives,
    their hit mask and log Q on the CPU (where the generator and the lookup live), scores and loss on `device`."""
    negatives = sampler.sample(config.num_negatives, generator)
    if config.remove_accidental_hits:
        valid = ~lookup.contains(torch.from_numpy(batch.users)[batch.row_user], negatives.rows)
    else:
        valid = torch.ones(len(batch.targets), len(negatives), dtype=torch.bool, device="cpu")
    pos, neg = scorer(
        batch.inputs.to(device), batch.row_user.to(device), batch.targets.to(device), negatives.rows.to(device)
    )
    pos_log_q, neg_log_q = sampler.log_q[batch.targets].to(device), negatives.log_q.to(device)
    return loss_fn(pos, neg, valid.to(device), pos_log_q, neg_log_q)


def _model_scores(model: RetrievalModel) -> ScoreFn:
    """Full-catalogue scores of fold-in histories, computed where the model is and returned on the CPU."""
    device = model.item_vectors().device
    return lambda bags: (model.fold_in(bags.to(device)) @ model.item_vectors().T).cpu()


def _fmt(metrics: dict[str, MetricEstimate]) -> str:
    return ", ".join(f"{name} {value}" for name, value in metrics.items())
