"""Phase 2, the item-language model: the LLM stays frozen; the item encoder (Q-Former + adaptor, or a baseline
with the same `soft_tokens`) learns to produce soft tokens from which it answers the tasks of a `TaskMix`
(chat-templated user turns with `{item}` slots); next-token loss on the answer tokens only.
With `replicas`, each replica runs its shard of every batch's examples (`ilm_model.distributed`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ilm_model.configuration import Phase2Config
from ilm_model.distributed import average_gradients, mean_values, shard
from ilm_model.errors import ILMError
from ilm_model.objectives import IGNORE_INDEX, next_token_loss
from ilm_model.optimization import build_optimizer, warmup_cosine
from ilm_model.prompting import ItemPrompt, PrefixCache
from ilm_model.tasks import TaskExample, TaskMix
from ilm_model.train_checkpoint import PhaseState, StepCheckpoints
from ilm_model.training_history import TrainingHistory
from retrieval.distributed import Replicas

PHASE = "phase2"
TRAINABLE_PREFIXES = ("qformer.", "adaptor.")


@dataclass
class AnswerTokens:
    """Log-probabilities of the answer tokens `[B, T]` and which of them are real (`mask [B, T]` bool)."""

    log_probs: torch.Tensor
    mask: torch.Tensor

    def mean(self) -> torch.Tensor:
        """Token-weighted mean over the batch (the training loss is its negative)."""
        return self.log_probs[self.mask].mean()

    def per_row(self) -> torch.Tensor:
        """Mean log-probability per answer token of each row `[B]` (length-normalised candidate score)."""
        return (self.log_probs * self.mask).sum(1) / self.mask.sum(1).clamp(min=1)


def answer_log_probs(
    llm: PreTrainedModel,
    bodies: Sequence[torch.Tensor],
    answer_ids: Sequence[Sequence[int]],
    prefix_cache: PrefixCache | None = None,
) -> AnswerTokens:
    """log p(answer_b | prefix, body_b) token by token, for prompt bodies `[L_b, d_llm]` of varying length.

    Row b is `body_b answer_b`, right-padded; with `prefix_cache` the shared prefix comes from the cache (so
    bodies omit it), else bodies are whole prompts. Only the positions from the earliest last-body token on
    go through the LM head.
    """
    device = bodies[0].device
    embed = llm.get_input_embeddings()
    rows = [torch.cat([body, embed(torch.tensor(list(ids), dtype=torch.long, device=device))]) for body, ids in
            zip(bodies, answer_ids, strict=True)]
    batch, longest = len(rows), max(len(r) for r in rows)
    inputs = torch.zeros(batch, longest, rows[0].shape[1], dtype=rows[0].dtype, device=device)
    mask = torch.zeros(batch, longest, dtype=torch.long, device=device)
    labels = torch.full((batch, longest), IGNORE_INDEX, dtype=torch.long, device=device)
    for b, (row, body, ids) in enumerate(zip(rows, bodies, answer_ids, strict=True)):
        inputs[b, : len(row)] = row
        mask[b, : len(row)] = 1
        labels[b, len(body) : len(row)] = torch.tensor(list(ids), dtype=torch.long, device=device)
    first = min(len(body) for body in bodies) - 1  # position predicting the earliest answer token
    if first < 0:
        raise ILMError("every prompt body needs at least one position (keep the last prompt token out of the cache)")
    cache_kwargs: dict = {"use_cache": False}
    if prefix_cache is not None:
        cache_kwargs = prefix_cache.for_batch(batch)
        mask = torch.cat([torch.ones(batch, prefix_cache.length, dtype=torch.long, device=device), mask], dim=1)
    logits = llm(inputs_embeds=inputs, attention_mask=mask, logits_to_keep=longest - first, **cache_kwargs).logits
    targets = labels[:, first + 1 :]
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    real = targets != IGNORE_INDEX
    picked = log_probs.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    return AnswerTokens(log_probs=picked.masked_fill(~real, 0.0), mask=real)


def answer_loss(
    llm: PreTrainedModel,
    bodies: Sequence[torch.Tensor],
    answer_ids: Sequence[Sequence[int]],
    prefix_cache: PrefixCache | None = None,
) -> torch.Tensor:
    """Mean next-token cross-entropy over every answer token of the batch (see `answer_log_probs`):

    L = -1/N sum_{b, t in answer_b} log p(y_bt | prefix, body_b, y_b<t).
    """
    return -answer_log_probs(llm, bodies, answer_ids, prefix_cache).mean()


class PromptBook:
    """Built prompts and tokenised answers of task examples, memoised (many examples share an instruction)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: Phase2Config):
        self.tokenizer, self.config = tokenizer, config
        self._prompts: dict[str, ItemPrompt] = {}
        self._answers: dict[str, list[int]] = {}
        self.head_ids = self.prompt("{item}").head_ids

    def prompt(self, instruction: str) -> ItemPrompt:
        if instruction not in self._prompts:
            self._prompts[instruction] = ItemPrompt.build(self.tokenizer, instruction, self.config.system_prompt)
        return self._prompts[instruction]

    def answer(self, example: TaskExample) -> list[int]:
        if example.answer not in self._answers:
            self._answers[example.answer] = self.prompt(example.instruction).answer_ids(
                self.tokenizer, example.answer, self.config.max_answer_tokens
            )
        return self._answers[example.answer]


def example_bodies(
    model: torch.nn.Module,
    llm: PreTrainedModel,
    book: PromptBook,
    examples: Sequence[TaskExample],
    cf_embeddings: torch.Tensor,
    with_head: bool,
) -> list[torch.Tensor]:
    """Prompt embeddings `[L_b, d_llm]` per example, soft tokens of all their items from one encoder pass."""
    rows = torch.tensor([r for e in examples for r in e.items], dtype=torch.long, device=cf_embeddings.device)
    soft = model.soft_tokens(cf_embeddings[rows])  # [sum of items, K, d_llm]
    bodies, start = [], 0
    for example in examples:
        n = len(example.items)
        tokens = soft[start : start + n].reshape(1, -1, soft.shape[-1])
        bodies.append(book.prompt(example.instruction).embed_body(llm, tokens, with_head=with_head)[0])
        start += n
    return bodies


def train_phase2(
    model: torch.nn.Module,
    llm: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    tasks: TaskMix,
    cf_embeddings: torch.Tensor,
    config: Phase2Config,
    history: TrainingHistory,
    seed: int = 0,
    progress: bool = True,
    checkpoints: StepCheckpoints | None = None,
    replicas: Replicas | None = None,
) -> np.ndarray:
    """Train the item encoder's `qformer.*` / `adaptor.*` parameters in place on `tasks` (items are rows of
    `cf_embeddings [n_items, d_cf]`, on the device of `model` and `llm`, where training runs); the LLM is not
    touched (it must already have `requires_grad=False`). Tasks are sampled by a CPU generator.
    Returns the sorted rows that were a describe target at least once. `checkpoints` as in `train_phase1`.

    With `replicas`, every replica samples the same batch and computes the loss of its shard of the examples,
    scaled by W N_r / N (N_r of the batch's N answer tokens are its own); the gradients are averaged, so each
    step is that of one process up to float noise. The LLM runs on every replica, unwrapped and frozen."""
    if any(p.requires_grad for p in llm.parameters()):
        raise ILMError("the LLM must be frozen (requires_grad=False on every parameter); use load_frozen_llm")
    replicas = replicas or Replicas()
    if config.batch_size < replicas.world:
        raise ValueError(f"phase2.batch_size {config.batch_size} < {replicas.world} replicas; raise it or run fewer")
    generator = torch.Generator().manual_seed(seed)
    book = PromptBook(tokenizer, config)
    prefix_cache = PrefixCache(llm, book.head_ids) if config.cache_prefix and book.head_ids else None
    trainable = [(n, p) for n, p in model.named_parameters() if n.startswith(TRAINABLE_PREFIXES)]
    optimizer = build_optimizer(trainable, config.learning_rate, config.weight_decay)
    schedule = warmup_cosine(optimizer, config.warmup_steps, config.steps)
    model.train()
    state = PhaseState(model, optimizer, schedule, generator, samplers={})
    start = checkpoints.restore(PHASE, state, history) if checkpoints else 0
    bar = tqdm(range(start, config.steps), desc="ILM phase 2", disable=not (progress and replicas.is_main))
    for step in bar:
        examples = tasks.sample(config.batch_size, generator)
        state.seen.update(e.target for e in examples if e.kind == "describe")
        mine = shard(replicas, len(examples))
        answers = [book.answer(e) for e in examples]
        bodies = example_bodies(model, llm, book, examples[mine], cf_embeddings, with_head=prefix_cache is None)
        loss = answer_loss(llm, bodies, answers[mine], prefix_cache)
        tokens = [len(answer) for answer in answers]
        loss = loss * replicas.loss_scale(sum(tokens[mine]), sum(tokens))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(replicas, [p for _, p in trainable])
        torch.nn.utils.clip_grad_norm_([p for _, p in trainable], config.max_grad_norm)
        optimizer.step()
        schedule.step()
        batch_loss = mean_values(replicas, {"loss": loss.item()})["loss"]
        history.log(PHASE, step, loss=batch_loss, lr=schedule.get_last_lr()[0])
        if checkpoints:
            checkpoints.after_step(PHASE, step, config.steps, state, history)
        bar.set_postfix(loss=f"{batch_loss:.3f}")
    model.eval()
    return np.array(sorted(state.seen), dtype=np.int64)
