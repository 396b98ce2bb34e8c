"""Phase 2, the item-language model: the LLM stays frozen; Q-Former + adaptor learn to produce soft tokens
from which it answers. Task: the chat-templated user turn "Describe this movie: {item}" with the answer
`describe(movie)`; next-token loss on the answer tokens only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ilm_model.batching import shuffled_batches
from ilm_model.configuration import Phase2Config
from ilm_model.errors import ILMError
from ilm_model.modeling import ItemLanguageModel
from ilm_model.objectives import IGNORE_INDEX, next_token_loss
from ilm_model.optimization import build_optimizer, warmup_cosine
from ilm_model.prompting import ItemPrompt, PrefixCache
from ilm_model.training_history import TrainingHistory

PHASE = "phase2"


def answer_loss(
    llm: PreTrainedModel,
    prompt: ItemPrompt,
    soft_tokens: torch.Tensor,
    answer_ids: Sequence[Sequence[int]],
    prefix_cache: PrefixCache | None = None,
) -> torch.Tensor:
    """Next-token loss of the answers given the prompt with `soft_tokens [B, K, d_llm]` spliced in.

    Sequence: prefix, K soft tokens, suffix, answer (right-padded). Only answer tokens are predicted. With
    `prefix_cache` the prefix is read from the cache instead of being recomputed (same loss).
    """
    batch, device = soft_tokens.shape[0], soft_tokens.device
    longest = max(len(a) for a in answer_ids)
    answers = torch.zeros(batch, longest, dtype=torch.long, device=device)
    answer_mask = torch.zeros(batch, longest, dtype=torch.long, device=device)
    for row, ids in enumerate(answer_ids):
        answers[row, : len(ids)] = torch.tensor(ids, device=device)
        answer_mask[row, : len(ids)] = 1
    embed = llm.get_input_embeddings()
    if prefix_cache is None:
        prompt_embeds = prompt.embed(llm, soft_tokens)
        cache_kwargs = {"use_cache": False}
    else:
        suffix = embed(torch.tensor(prompt.suffix_ids, device=device))[None].expand(batch, -1, -1)
        prompt_embeds = torch.cat([soft_tokens.to(suffix.dtype), suffix], dim=1)
        cache_kwargs = prefix_cache.for_batch(batch)
    inputs = torch.cat([prompt_embeds, embed(answers)], dim=1)
    past = prefix_cache.length if prefix_cache is not None else 0
    prompt_mask = torch.ones(batch, past + prompt_embeds.shape[1], dtype=torch.long, device=device)
    # logits of the last prompt position and every answer position: enough to predict each answer token
    keep = longest + 1
    logits = llm(
        inputs_embeds=inputs,
        attention_mask=torch.cat([prompt_mask, answer_mask], dim=1),
        logits_to_keep=keep,
        **cache_kwargs,
    ).logits
    labels = torch.cat(
        [torch.full((batch, 1), IGNORE_INDEX, device=device), answers.masked_fill(answer_mask == 0, IGNORE_INDEX)],
        dim=1,
    )
    return next_token_loss(logits, labels)


def train_phase2(
    model: ItemLanguageModel,
    llm: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    answers: Sequence[str],
    cf_embeddings: torch.Tensor,
    config: Phase2Config,
    history: TrainingHistory,
    seed: int = 0,
    progress: bool = True,
) -> np.ndarray:
    """Train Q-Former + adaptor in place on (cf_embeddings[i] `[n, d_cf]`, answers[i]); the LLM is not touched
    (it must already have `requires_grad=False`). Returns the sorted rows that were trained on."""
    if any(p.requires_grad for p in llm.parameters()):
        raise ILMError("the LLM must be frozen (requires_grad=False on every parameter); use load_frozen_llm")
    if len(answers) != len(cf_embeddings) or not answers:
        raise ValueError(f"need aligned pairs; got {len(answers)} answers and {len(cf_embeddings)} CF rows")
    generator = torch.Generator().manual_seed(seed)
    prompt = ItemPrompt.build(tokenizer, config.instruction, config.system_prompt)
    answer_ids = [prompt.answer_ids(tokenizer, a, config.max_answer_tokens) for a in answers]
    prefix_cache = PrefixCache(llm, prompt.prefix_ids) if config.cache_prefix and prompt.prefix_ids else None
    trainable = [(n, p) for n, p in model.named_parameters() if n.startswith(("qformer.", "adaptor."))]
    optimizer = build_optimizer(trainable, config.learning_rate, config.weight_decay)
    schedule = warmup_cosine(optimizer, config.warmup_steps, config.steps)
    model.train()
    seen: set[int] = set()
    batches = shuffled_batches(len(answers), config.batch_size, generator)
    bar = tqdm(range(config.steps), desc="ILM phase 2", disable=not progress)
    for step in bar:
        rows = next(batches)
        seen.update(rows.tolist())
        soft = model.soft_tokens(cf_embeddings[rows])
        loss = answer_loss(llm, prompt, soft, [answer_ids[r] for r in rows.tolist()], prefix_cache)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in trainable], config.max_grad_norm)
        optimizer.step()
        schedule.step()
        history.log(PHASE, step, loss=loss.item(), lr=schedule.get_last_lr()[0])
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return np.array(sorted(seen), dtype=np.int64)
