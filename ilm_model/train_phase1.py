"""Phase 1, item-language representation learning (LLM not involved): ITC + ITG + ITM on (CF item, text) pairs,
IIC on co-interacted item pairs and UIC on (user, item) pairs.

Per step, up to three Q-Former passes over `[queries; text]`, each with its own attention mask:
unimodal (ITC: query and text features apart), causal (ITG: text generated from the queries),
bidirectional on positives + hard negatives (ITM); plus one query-only pass over the pairs of IIC and of UIC.
With `replicas`, each replica makes these passes over its shard of the batch only (`ilm_model.distributed`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from tqdm.auto import tqdm

from ilm_model.batching import ShuffledBatches
from ilm_model.configuration import Phase1Config
from ilm_model.distributed import average_gradients, gather_rows, mean_values, shard
from ilm_model.modeling import ItemLanguageModel
from ilm_model.objectives import (
    duplicate_pair_mask,
    iic_loss,
    itc_loss,
    itg_loss,
    itm_loss,
    max_query_similarity,
    sample_hard_negatives,
    uic_loss,
)
from ilm_model.optimization import build_optimizer, warmup_cosine
from ilm_model.train_checkpoint import PhaseState, StepCheckpoints
from ilm_model.training_history import TrainingHistory
from retrieval.distributed import Replicas

PHASE = "phase1"


@dataclass
class Phase1Losses:
    """Weighted total and the unweighted parts (None where switched off by a zero weight)."""

    total: torch.Tensor
    itc: torch.Tensor | None
    itg: torch.Tensor | None
    itm: torch.Tensor | None
    iic: torch.Tensor | None = None
    uic: torch.Tensor | None = None


@dataclass
class PairBatch:
    """B contrastive pairs: CF vectors of the left (`[B, d_cf]`: items for IIC, users for UIC) and right
    (`[B, d_cf]`: items) sides, and their ids `[B]` (to drop in-batch duplicates from the negatives)."""

    left_cf: torch.Tensor
    right_cf: torch.Tensor
    left_ids: torch.Tensor
    right_ids: torch.Tensor

    def features(self, model: ItemLanguageModel, replicas: Replicas) -> tuple[torch.Tensor, torch.Tensor]:
        """ITC-space query features of both sides, `[B, K, d]` each, from one query-only pass (over this
        replica's shard of the pairs, then gathered)."""
        n, mine = len(self.left_cf), shard(replicas, len(self.left_cf))
        local = len(self.left_cf[mine])
        both = model.encode_items(torch.cat([self.left_cf[mine], self.right_cf[mine]]))
        return gather_rows(replicas, both[:local], n), gather_rows(replicas, both[local:], n)

    def exclude(self) -> torch.Tensor:
        return duplicate_pair_mask(self.left_ids, self.right_ids)


def phase1_losses(
    model: ItemLanguageModel,
    cf_embeddings: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    config: Phase1Config,
    generator: torch.Generator | None = None,
    item_pairs: PairBatch | None = None,
    user_pairs: PairBatch | None = None,
    itg_vocabulary: torch.Tensor | None = None,
    replicas: Replicas | None = None,
) -> Phase1Losses:
    """Losses of one batch of pairs: item i (`cf_embeddings [B, d_cf]`) and its text i (`input_ids [B, T]`),
    plus IIC on `item_pairs` and UIC on `user_pairs` (each required when its weight is > 0); ITG scores the
    sorted token ids `itg_vocabulary [V']` only when given (see `text_vocabulary`), else the whole vocabulary.

    With `replicas`, every replica passes the same batch and `generator` state and returns its part: ITC, IIC
    and UIC whole, ITG and ITM scaled so that their mean over replicas is the batch loss."""
    replicas = replicas or Replicas()
    batch = cf_embeddings.shape[0]
    mine = shard(replicas, batch)
    if config.iic_weight and item_pairs is None:
        raise ValueError("iic_weight > 0 needs item_pairs (co-interacted items); pass interactions or set it to 0")
    if config.uic_weight and user_pairs is None:
        raise ValueError("uic_weight > 0 needs user_pairs (user CF vectors); pass interactions or set it to 0")
    temperature = model.temperature_value()
    itc, similarity = None, None
    if config.itc_weight or config.itm_weight:
        unimodal = model.qformer(cf_embeddings[mine], input_ids[mine], attention_mask[mine], attention="unimodal")
        similarity = max_query_similarity(
            gather_rows(replicas, model.item_features(unimodal.query_states), batch),
            gather_rows(replicas, model.text_features(unimodal.text_states, attention_mask[mine]), batch),
        )
        itc = itc_loss(similarity, temperature) if config.itc_weight else None

    itg = None
    if config.itg_weight:
        causal = model.qformer(cf_embeddings[mine], input_ids[mine], attention_mask[mine], attention="causal")
        head = partial(model.itg_logits, vocabulary=itg_vocabulary)
        itg = itg_loss(causal.text_states, input_ids[mine], attention_mask[mine], head, itg_vocabulary)
        predicting = attention_mask[:, 1:].sum(1)  # ITG's targets per row
        itg = itg * replicas.loss_scale(int(predicting[mine].sum()), int(predicting.sum()))

    itm = None
    if config.itm_weight:
        with torch.no_grad():
            negative_text, negative_item = sample_hard_negatives(similarity, temperature, generator)
        n = batch if config.itm_items is None else min(config.itm_items, batch)
        rows = shard(replicas, n)
        negative_text, negative_item = negative_text[rows], negative_item[rows]
        cf, ids, mask = cf_embeddings[rows], input_ids[rows], attention_mask[rows]
        joint = model.qformer(
            torch.cat([cf, cf, cf_embeddings[negative_item]]),
            torch.cat([ids, input_ids[negative_text], ids]),
            torch.cat([mask, attention_mask[negative_text], mask]),
            attention="bidirectional",
        )
        local = len(cf)
        labels = torch.zeros(3 * local, dtype=torch.long, device=input_ids.device)
        labels[:local] = 1
        itm = itm_loss(model.itm_logits(joint.query_states), labels) * replicas.loss_scale(local, n)

    iic = uic = None
    if config.iic_weight:
        iic = iic_loss(*item_pairs.features(model, replicas), temperature, item_pairs.exclude())
    if config.uic_weight:
        uic = uic_loss(*user_pairs.features(model, replicas), temperature, user_pairs.exclude())

    parts = [
        (config.itc_weight, itc), (config.itg_weight, itg), (config.itm_weight, itm),
        (config.iic_weight, iic), (config.uic_weight, uic),
    ]
    total = sum(weight * loss for weight, loss in parts if loss is not None)
    return Phase1Losses(total=total, itc=itc, itg=itg, itm=itm, iic=iic, uic=uic)


def text_vocabulary(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Sorted distinct token ids `[V']` of the real (unpadded) tokens of `input_ids [n, T]`: every ITG target."""
    return torch.unique(input_ids[attention_mask.bool()])


class PairSampler:
    """Epochs of shuffled batches of index pairs `[P, 2]`; each batch becomes a `PairBatch` by looking the
    left column up in `left_table` and the right one in `right_table` (`[*, d_cf]` each)."""

    def __init__(
        self,
        pairs: np.ndarray,
        left_table: torch.Tensor,
        right_table: torch.Tensor,
        batch_size: int,
        generator: torch.Generator,
    ):
        if len(pairs) < 2:
            raise ValueError(f"contrastive pairs need at least 2 pairs; got {len(pairs)}")
        self.pairs = torch.as_tensor(pairs, dtype=torch.long)
        self.left_table, self.right_table = left_table, right_table
        self.batches = ShuffledBatches(len(pairs), batch_size, generator)

    def next(self) -> PairBatch:
        """The next batch, on the tables' device (the shuffling stays on the CPU generator)."""
        left, right = self.pairs[next(self.batches)].to(self.right_table.device).unbind(1)
        return PairBatch(self.left_table[left], self.right_table[right], left, right)


def train_phase1(
    model: ItemLanguageModel,
    texts: Sequence[str],
    cf_embeddings: torch.Tensor,
    config: Phase1Config,
    history: TrainingHistory,
    seed: int = 0,
    progress: bool = True,
    item_pairs: np.ndarray | None = None,
    user_embeddings: torch.Tensor | None = None,
    user_pairs: np.ndarray | None = None,
    checkpoints: StepCheckpoints | None = None,
    replicas: Replicas | None = None,
) -> None:
    """Train `model` in place on pairs (cf_embeddings[i] `[n, d_cf]`, texts[i]); one history record per step.
    Training runs where `cf_embeddings` is (`model` and `user_embeddings` must be there too); the batches are
    shuffled by a CPU generator, so a seed draws the same rows on any device.

    IIC reads `item_pairs [P, 2]` (indices into `cf_embeddings` of co-interacted items), UIC `user_pairs [P, 2]`
    (index into `user_embeddings [U, d_cf]`, index into `cf_embeddings`); each only when its weight is > 0.
    With `checkpoints`, the whole training state is saved every `checkpoints.every` steps and a pending phase-1
    checkpoint is continued from (replacing `history`), to the result of an uninterrupted run.
    With `replicas` (one per process of a process group) each computes its shard of every batch
    (`phase1_losses`) and the gradients are averaged: the steps are those of one process, up to float noise.
    """
    if len(texts) != len(cf_embeddings) or len(texts) < 2:
        raise ValueError(f"need >= 2 aligned pairs; got {len(texts)} texts and {len(cf_embeddings)} CF rows")
    replicas = replicas or Replicas()
    smallest = min(config.batch_size, len(texts), config.itm_items or config.batch_size)
    if config.iic_weight or config.uic_weight:
        smallest = min(smallest, config.pair_batch_size)
    if smallest < replicas.world:
        raise ValueError(
            f"{replicas.world} replicas need at least one row each: raise phase1.batch_size (itm_items, "
            f"pair_batch_size) to >= {replicas.world} or run fewer processes"
        )
    generator = torch.Generator().manual_seed(seed)
    item_sampler = user_sampler = None
    if config.iic_weight:
        if item_pairs is None:
            raise ValueError("iic_weight > 0 needs item_pairs (co-interacted items); pass interactions or set it to 0")
        item_sampler = PairSampler(item_pairs, cf_embeddings, cf_embeddings, config.pair_batch_size, generator)
    if config.uic_weight:
        if user_pairs is None or user_embeddings is None:
            raise ValueError("uic_weight > 0 needs user_embeddings and user_pairs; pass interactions or set it to 0")
        user_sampler = PairSampler(user_pairs, user_embeddings, cf_embeddings, config.pair_batch_size, generator)
    device = cf_embeddings.device
    tokens = model.tokenize(texts).to(device)
    vocabulary = None
    if config.itg_vocabulary == "texts":
        vocabulary = text_vocabulary(tokens["input_ids"], tokens["attention_mask"])
    optimizer = build_optimizer(model.named_parameters(), config.learning_rate, config.weight_decay)
    schedule = warmup_cosine(optimizer, config.warmup_steps, config.steps)
    model.train()
    batches = ShuffledBatches(len(texts), config.batch_size, generator)
    samplers = {"rows": batches}
    samplers |= {"item_pairs": item_sampler.batches} if item_sampler else {}
    samplers |= {"user_pairs": user_sampler.batches} if user_sampler else {}
    state = PhaseState(model, optimizer, schedule, generator, samplers)
    start = checkpoints.restore(PHASE, state, history) if checkpoints else 0
    bar = tqdm(range(start, config.steps), desc="ILM phase 1", disable=not (progress and replicas.is_main))
    for step in bar:
        rows = next(batches).to(device)
        mask = tokens["attention_mask"][rows]
        length = int(mask.sum(1).max())
        losses = phase1_losses(
            model, cf_embeddings[rows], tokens["input_ids"][rows, :length], mask[:, :length], config, generator,
            item_sampler.next() if item_sampler else None, user_sampler.next() if user_sampler else None, vocabulary,
            replicas,
        )
        optimizer.zero_grad(set_to_none=True)
        losses.total.backward()
        average_gradients(replicas, model.parameters())
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        schedule.step()
        parts = {"itc": losses.itc, "itg": losses.itg, "itm": losses.itm, "iic": losses.iic, "uic": losses.uic}
        values = {"loss": losses.total.item()} | {f"loss_{k}": v.item() for k, v in parts.items() if v is not None}
        batch_values = mean_values(replicas, values)
        record = {"loss": batch_values.pop("loss"), "lr": schedule.get_last_lr()[0]} | batch_values
        record["temperature"] = model.temperature_value().item()
        history.log(PHASE, step, **record)
        if checkpoints:
            checkpoints.after_step(PHASE, step, config.steps, state, history)
        bar.set_postfix(loss=f"{record['loss']:.3f}")
    model.eval()
