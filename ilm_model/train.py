"""`train_ilm`: phase 1, phase 2, evaluation and the soft-token table, from a catalogue and its CF embeddings."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ilm_model.configuration import ILMConfig
from ilm_model.evaluation import itc_recall_at_k, score_descriptions
from ilm_model.interactions import Interactions, co_interacted_pairs, user_item_pairs
from ilm_model.item_text import describe
from ilm_model.metadata import enriched_text, join_facts, movies_db, read_facts
from ilm_model.modeling import ItemLanguageModel, ItemRepresentations
from ilm_model.prompting import ItemPrompt, generate_from_soft_tokens
from ilm_model.soft_tokens import SoftTokenTable
from ilm_model.tasks import build_task_mix
from ilm_model.train_checkpoint import StepCheckpoints, ilm_run_key
from ilm_model.train_phase1 import train_phase1
from ilm_model.train_phase2 import train_phase2
from ilm_model.training_history import TrainingHistory
from retrieval.catalogue import Catalogue
from retrieval.distributed import Replicas
from retrieval.storage import write_atomic

logger = logging.getLogger(__name__)


@dataclass
class ILMTrainResult:
    """The trained model, the soft tokens of every catalogue item, per-step losses and metrics.

    `examples` holds generated descriptions next to the expected text (split "trained" or "heldout").
    """

    model: ItemLanguageModel
    soft_tokens: SoftTokenTable
    history: TrainingHistory
    metrics: dict[str, float]
    examples: list[dict[str, str | int]] = field(default_factory=list)

    def save(self, directory: Path) -> None:
        """`model/` (checkpoint), `soft_tokens.safetensors`, `history.json`, `loss_curves.png`, `metrics.json`
        (metrics and examples)."""
        directory = Path(directory)
        self.model.save_pretrained(directory / "model")
        self.soft_tokens.save(directory / "soft_tokens.safetensors")
        self.history.save(directory / "history.json")
        self.history.plot(directory / "loss_curves.png")
        report = {"metrics": self.metrics, "examples": self.examples}
        write_atomic(directory / "metrics.json", json.dumps(report, indent=2).encode())


def heldout_split(n_items: int, n_heldout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_rows, heldout_rows), sorted; at most a fifth of the items is held out."""
    n_heldout = min(n_heldout, n_items // 5)
    heldout = np.sort(np.random.default_rng(seed).choice(n_items, size=n_heldout, replace=False))
    return np.setdiff1d(np.arange(n_items), heldout), heldout


def phase1_pair_inputs(
    config: ILMConfig,
    interactions: Interactions | None,
    n_items: int,
    train_rows: np.ndarray,
    device: torch.device | str = "cpu",
) -> dict[str, object]:
    """`train_phase1` keyword arguments for IIC / UIC: pairs among `train_rows`, re-indexed to positions in it
    (the user CF vectors on `device`)."""
    phase1 = config.phase1
    if not (phase1.iic_weight or phase1.uic_weight):
        return {}
    if interactions is None:
        raise ValueError("phase1.iic_weight / uic_weight > 0 need interactions; pass them to train_ilm or set 0")
    allowed = np.zeros(n_items, dtype=bool)
    allowed[train_rows] = True
    position = np.full(n_items, -1, dtype=np.int64)
    position[train_rows] = np.arange(len(train_rows))
    inputs: dict[str, object] = {}
    if phase1.iic_weight:
        inputs["item_pairs"] = position[co_interacted_pairs(interactions.histories, allowed)]
    if phase1.uic_weight:
        if interactions.user_embeddings is None:
            raise ValueError("phase1.uic_weight > 0 needs interactions.user_embeddings")
        pairs = user_item_pairs(interactions.histories, allowed)
        inputs["user_pairs"] = np.stack([pairs[:, 0], position[pairs[:, 1]]], axis=1)
        user_embeddings = interactions.user_embeddings
        inputs["user_embeddings"] = torch.as_tensor(user_embeddings, dtype=torch.float32, device=device)
    return inputs


def train_ilm(
    catalogue: Catalogue,
    cf_item_embeddings: np.ndarray,
    llm: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    config: ILMConfig | None = None,
    progress: bool = True,
    interactions: Interactions | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    checkpoint_every: int = 50,
    replicas: Replicas | None = None,
    device: torch.device | str | None = None,
) -> ILMTrainResult:
    """Train the ILM on every catalogue item except a held-out sample, then measure it and build the table.

    `cf_item_embeddings [n_items, d_cf]` rows are aligned with the catalogue; `llm` is frozen (see
    `load_frozen_llm`). Metrics: ITC text->item Recall@k of held-out items' texts over the whole catalogue
    (at the end, optionally also after phase 1; with the chance level k/n), exact-title accuracy and genre F1 of greedy
    descriptions from soft tokens for items trained in phase 2 and for held-out items, and wall times.
    `interactions` (histories over catalogue rows, user CF vectors) feed IIC, UIC and the phase-2 recommendation
    tasks; pairs and tasks touching a held-out item are dropped.

    With `checkpoint_dir`, every `checkpoint_every` steps of either phase (and each phase's last) the training
    state is written there atomically (`ilm_model.train_checkpoint`); `resume=True` continues from that checkpoint
    when there is one (a phase-2 one skips phase 1), to the uninterrupted run's result; one of another config,
    data or LLM is refused.

    With `replicas` (one per process of an initialised process group; launched by `ilm_model.train_distributed`)
    both phases train data-parallel (`ilm_model.distributed`), rank 0 alone evaluates (the others get its
    metrics) and writes checkpoints; every replica returns the same result.

    Training runs on `device` (default: the LLM's; `llm` must already be there, see `load_frozen_llm`); the
    result's model stays there, its soft-token table is on the CPU, and everything saved is written from CPU
    tensors.
    """
    cf = np.asarray(cf_item_embeddings, dtype=np.float32)
    if cf.ndim != 2 or len(cf) != len(catalogue):
        raise ValueError(f"cf_item_embeddings must be [n_items={len(catalogue)}, d_cf]; got {cf.shape}")
    config = (config or ILMConfig()).for_data(cf.shape[1], llm.get_input_embeddings().embedding_dim)
    device = llm.device if device is None else torch.device(device)
    if llm.device.type != device.type or (device.index is not None and llm.device.index != device.index):
        raise ValueError(f"the LLM is on {llm.device}, not on {device}; load it with load_frozen_llm(device=...)")
    evaluation = config.evaluation
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    cf_tensor = torch.from_numpy(cf).to(device)
    texts = [describe(movie) for movie in catalogue]
    train_rows, heldout_rows = heldout_split(len(catalogue), evaluation.heldout_items, config.seed)
    heldout_texts = [texts[r] for r in heldout_rows]
    k = evaluation.recall_k
    metrics: dict[str, float] = {"n_items": len(catalogue), "n_heldout": len(heldout_rows)}
    metrics[f"itc_recall@{k}_chance"] = min(1.0, k / len(catalogue))

    model = ItemLanguageModel.from_config(config).to(device)
    replicas = replicas or Replicas()
    if replicas.world > 1:
        torch.manual_seed(config.seed + replicas.rank)  # same initial weights, but each shard its own dropout
    history = TrainingHistory()
    checkpoints = None
    if checkpoint_dir is not None:
        run = ilm_run_key(config, catalogue, cf, interactions, llm.name_or_path)
        checkpoints = StepCheckpoints(checkpoint_dir, run, checkpoint_every, resume, dict(metrics), replicas.is_main)
    pending = checkpoints.pending() if checkpoints else None
    if pending is not None and pending.phase == "phase2":
        metrics = dict(pending.metrics)  # phase 1's results; its weights come with the phase-2 state
    else:
        tick = time.perf_counter()
        phase1_texts = texts
        if config.phase1.item_metadata:
            facts = join_facts(catalogue, read_facts(movies_db()))
            metrics["item_metadata_match_rate"] = len(facts) / len(catalogue)
            phase1_texts = [enriched_text(text, facts.get(row)) for row, text in enumerate(texts)]
        pair_inputs = phase1_pair_inputs(config, interactions, len(catalogue), train_rows, device)
        train_phase1(
            model, [phase1_texts[r] for r in train_rows], cf_tensor[train_rows], config.phase1, history, config.seed,
            progress, **pair_inputs, checkpoints=checkpoints, replicas=replicas,
        )
        metrics["phase1_seconds"] = time.perf_counter() - tick
        if len(heldout_rows) and evaluation.recall_after_phase1:
            def recall_after_phase1() -> float:
                features = model.represent_items(cf_tensor, evaluation.batch_size).itc_features
                return itc_recall_at_k(model, heldout_texts, heldout_rows, features, k, evaluation.batch_size)

            metrics[f"itc_recall@{k}_heldout_after_phase1"] = replicas.from_main(recall_after_phase1)

    tick = time.perf_counter()
    if checkpoints:
        checkpoints.metrics = dict(metrics)
    tasks = build_task_mix(catalogue, config.phase2, train_rows, interactions, config.seed)
    trained_rows = train_phase2(
        model, llm, tokenizer, tasks, cf_tensor, config.phase2, history, config.seed, progress, checkpoints, replicas
    )
    metrics["phase2_seconds"] = time.perf_counter() - tick

    tick = time.perf_counter()
    items = model.represent_items(cf_tensor, evaluation.batch_size)
    table = SoftTokenTable(catalogue.ids, items.soft_tokens.cpu())
    evaluated, examples = replicas.from_main(
        lambda: _evaluate(model, llm, tokenizer, catalogue, texts, items, trained_rows, heldout_rows, config)
    )
    metrics |= evaluated
    metrics["evaluation_seconds"] = time.perf_counter() - tick
    metrics["total_seconds"] = time.perf_counter() - started
    logger.info("ILM trained: %s", {name: round(value, 4) for name, value in metrics.items()})
    return ILMTrainResult(model=model, soft_tokens=table, history=history, metrics=metrics, examples=examples)


def _evaluate(
    model: ItemLanguageModel,
    llm: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    catalogue: Catalogue,
    texts: list[str],
    items: ItemRepresentations,
    trained_rows: np.ndarray,
    heldout_rows: np.ndarray,
    config: ILMConfig,
) -> tuple[dict[str, float], list[dict[str, str | int]]]:
    """`train_ilm`'s final metrics (ITC recall, title accuracy, genre F1) and generated examples."""
    evaluation, k = config.evaluation, config.evaluation.recall_k
    metrics: dict[str, float] = {}
    if len(heldout_rows):
        heldout_texts = [texts[r] for r in heldout_rows]
        recall = itc_recall_at_k(model, heldout_texts, heldout_rows, items.itc_features, k, evaluation.batch_size)
        metrics[f"itc_recall@{k}_heldout"] = recall
    prompt = ItemPrompt.build(tokenizer, config.phase2.instruction, config.phase2.system_prompt)
    rng = np.random.default_rng(config.seed)
    examples: list[dict[str, str | int]] = []
    for split, rows in (("trained", trained_rows), ("heldout", heldout_rows)):
        sample = np.sort(rng.choice(rows, size=min(evaluation.generation_items, len(rows)), replace=False))
        if not len(sample):
            continue
        generated = generate_from_soft_tokens(
            llm, tokenizer, prompt, items.soft_tokens[sample], evaluation.max_new_tokens
        )
        movies = [catalogue.movies[r] for r in sample]
        scores = score_descriptions(generated, movies)
        metrics[f"title_accuracy_{split}"] = scores.title_accuracy
        metrics[f"genre_f1_{split}"] = scores.genre_f1
        examples += [
            {"split": split, "item_id": m.item_id, "expected": texts[r], "generated": g}
            for m, r, g in zip(movies, sample.tolist(), generated, strict=True)
        ]
    return metrics, examples
