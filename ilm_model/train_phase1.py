"""Phase 1, item-language representation learning (LLM not involved): ITC + ITG + ITM on (CF item, text) pairs.

Per step, three Q-Former passes over `[queries; text]`, each with its own attention mask:
unimodal (ITC: query and text features apart), causal (ITG: text generated from the queries),
bidirectional on positives + hard negatives (ITM).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ilm_model.batching import shuffled_batches
from ilm_model.configuration import Phase1Config
from ilm_model.modeling import ItemLanguageModel
from ilm_model.objectives import itc_loss, itg_loss, itm_loss, max_query_similarity, sample_hard_negatives
from ilm_model.optimization import build_optimizer, warmup_cosine
from ilm_model.training_history import TrainingHistory

PHASE = "phase1"


@dataclass
class Phase1Losses:
    """Weighted total and the unweighted parts (None where switched off by a zero weight)."""

    total: torch.Tensor
    itc: torch.Tensor | None
    itg: torch.Tensor | None
    itm: torch.Tensor | None


def phase1_losses(
    model: ItemLanguageModel,
    cf_embeddings: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    config: Phase1Config,
    generator: torch.Generator | None = None,
) -> Phase1Losses:
    """Losses of one batch of pairs: item i (`cf_embeddings [B, d_cf]`) and its text i (`input_ids [B, T]`)."""
    unimodal = model.qformer(cf_embeddings, input_ids, attention_mask, attention="unimodal")
    similarity = max_query_similarity(
        model.item_features(unimodal.query_states), model.text_features(unimodal.text_states)
    )
    temperature = model.temperature_value()
    itc = itc_loss(similarity, temperature) if config.itc_weight else None

    itg = None
    if config.itg_weight:
        causal = model.qformer(cf_embeddings, input_ids, attention_mask, attention="causal")
        itg = itg_loss(causal.text_states, input_ids, attention_mask, model.itg_logits)

    itm = None
    if config.itm_weight:
        with torch.no_grad():
            negative_text, negative_item = sample_hard_negatives(similarity, temperature, generator)
        batch = cf_embeddings.shape[0]
        joint = model.qformer(
            torch.cat([cf_embeddings, cf_embeddings, cf_embeddings[negative_item]]),
            torch.cat([input_ids, input_ids[negative_text], input_ids]),
            torch.cat([attention_mask, attention_mask[negative_text], attention_mask]),
            attention="bidirectional",
        )
        labels = torch.cat([torch.ones(batch), torch.zeros(2 * batch)]).long().to(input_ids.device)
        itm = itm_loss(model.itm_logits(joint.query_states), labels)

    parts = [(config.itc_weight, itc), (config.itg_weight, itg), (config.itm_weight, itm)]
    total = sum(weight * loss for weight, loss in parts if loss is not None)
    return Phase1Losses(total=total, itc=itc, itg=itg, itm=itm)


def train_phase1(
    model: ItemLanguageModel,
    texts: Sequence[str],
    cf_embeddings: torch.Tensor,
    config: Phase1Config,
    history: TrainingHistory,
    seed: int = 0,
    progress: bool = True,
) -> None:
    """Train `model` in place on pairs (cf_embeddings[i] `[n, d_cf]`, texts[i]); one history record per step."""
    if len(texts) != len(cf_embeddings) or len(texts) < 2:
        raise ValueError(f"need >= 2 aligned pairs; got {len(texts)} texts and {len(cf_embeddings)} CF rows")
    generator = torch.Generator().manual_seed(seed)
    tokens = model.tokenize(texts)
    optimizer = build_optimizer(model.named_parameters(), config.learning_rate, config.weight_decay)
    schedule = warmup_cosine(optimizer, config.warmup_steps, config.steps)
    model.train()
    batches = shuffled_batches(len(texts), config.batch_size, generator)
    bar = tqdm(range(config.steps), desc="ILM phase 1", disable=not progress)
    for step in bar:
        rows = next(batches)
        mask = tokens["attention_mask"][rows]
        length = int(mask.sum(1).max())
        losses = phase1_losses(
            model, cf_embeddings[rows], tokens["input_ids"][rows, :length], mask[:, :length], config, generator
        )
        optimizer.zero_grad(set_to_none=True)
        losses.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        schedule.step()
        record = {"loss": losses.total.item(), "lr": schedule.get_last_lr()[0]}
        record |= {f"loss_{k}": v.item() for k, v in (("itc", losses.itc), ("itg", losses.itg), ("itm", losses.itm))
                   if v is not None}
        record["temperature"] = model.temperature_value().item()
        history.log(PHASE, step, **record)
        bar.set_postfix(loss=f"{record['loss']:.3f}")
    model.eval()
