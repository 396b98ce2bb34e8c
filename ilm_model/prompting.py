"""Chat prompts with an `{item}` placeholder for the frozen LLM: split, embedded, soft tokens spliced in.

The chat template is rendered once with a marker in place of `{item}`; the text before and after it is
tokenised separately, so any chat LLM's template works. The K soft tokens go between the two embedded parts.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from ilm_model.errors import ILMError

PLACEHOLDER = "{item}"
_HEAD_MARKER = "<<ilmrec-user-text>>"
_ITEM_MARKER = "<<ilmrec-item-soft-tokens>>"
_ANSWER_MARKER = "<<ilmrec-answer>>"


@dataclass
class ItemPrompt:
    """A generation-ready chat prompt with n `{item}` slots: `head_ids` (the template up to the user's text, the
    same for every instruction under one system prompt), then `pieces[0]` slot_1 `pieces[1]` ... slot_n
    `pieces[n]`; `answer_end` is the text the template closes an assistant answer with (e.g. "<|im_end|>")."""

    head_ids: list[int]
    pieces: list[list[int]]
    answer_end: str

    @classmethod
    def build(
        cls, tokenizer: PreTrainedTokenizerBase, instruction: str, system_prompt: str | None = None
    ) -> ItemPrompt:
        """Render `instruction` (with one or more `{item}`) as the user turn of `tokenizer`'s chat template."""
        if PLACEHOLDER not in instruction:
            raise ILMError(f"the instruction must contain {PLACEHOLDER} at least once: {instruction!r}")
        messages = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
        content = _HEAD_MARKER + instruction.replace(PLACEHOLDER, _ITEM_MARKER)
        messages.append({"role": "user", "content": content})
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": _ANSWER_MARKER}], tokenize=False
        )
        slots = instruction.count(PLACEHOLDER)
        if (
            prompt.count(_ITEM_MARKER) != slots
            or prompt.count(_HEAD_MARKER) != 1
            or not full.startswith(prompt)
            or _ANSWER_MARKER not in full
        ):
            raise ILMError("the chat template does not keep the user text and answer verbatim; use another LLM")
        head, body = prompt.split(_HEAD_MARKER)
        return cls(
            head_ids=tokenizer(head, add_special_tokens=False)["input_ids"],
            pieces=[tokenizer(part, add_special_tokens=False)["input_ids"] for part in body.split(_ITEM_MARKER)],
            answer_end=full[len(prompt) :].split(_ANSWER_MARKER, 1)[1].rstrip(),
        )

    @property
    def num_slots(self) -> int:
        return len(self.pieces) - 1

    @property
    def prefix_ids(self) -> list[int]:
        """Every token before the first slot."""
        return self.head_ids + self.pieces[0]

    @property
    def suffix_ids(self) -> list[int]:
        """Every token after the last slot."""
        return self.pieces[-1]

    @property
    def text_length(self) -> int:
        """Prompt tokens that are text (the rest are soft tokens)."""
        return len(self.head_ids) + sum(len(p) for p in self.pieces)

    def answer_ids(self, tokenizer: PreTrainedTokenizerBase, answer: str, max_tokens: int) -> list[int]:
        """Token ids of `answer` followed by the template's end of turn, cut to `max_tokens`."""
        return tokenizer(answer + self.answer_end, add_special_tokens=False)["input_ids"][:max_tokens]

    def embed_blocks(
        self, llm: PreTrainedModel, blocks: Sequence[torch.Tensor], with_head: bool = True
    ) -> torch.Tensor:
        """One prompt's embeddings `[L, d_llm]` with `blocks[i] [T_i, d_llm]` in slot i (soft tokens, or the
        embedded text of the text-only baseline); without the head when `with_head` is False (read from a cache)."""
        if len(blocks) != self.num_slots:
            raise ILMError(f"{len(blocks)} item blocks for a prompt with {self.num_slots} slots")
        embed = llm.get_input_embeddings()
        device = blocks[0].device
        texts = ([self.head_ids + self.pieces[0]] if with_head else [self.pieces[0]]) + self.pieces[1:]
        parts = [embed(torch.tensor(texts[0], dtype=torch.long, device=device))]
        for block, ids in zip(blocks, texts[1:], strict=True):
            parts += [block.to(parts[0].dtype), embed(torch.tensor(ids, dtype=torch.long, device=device))]
        return torch.cat(parts)

    def embed_body(self, llm: PreTrainedModel, soft_tokens: torch.Tensor, with_head: bool = True) -> torch.Tensor:
        """Prompt embeddings `[B, L, d_llm]` with `soft_tokens [B, n * K, d_llm]` split into the n slots
        (K each, in order); without the head when `with_head` is False."""
        total = soft_tokens.shape[1]
        if total % self.num_slots:
            raise ILMError(f"{total} soft tokens do not split evenly into {self.num_slots} slots")
        size = total // self.num_slots
        return torch.stack([self.embed_blocks(llm, row.split(size), with_head) for row in soft_tokens])

    def embed(self, llm: PreTrainedModel, soft_tokens: torch.Tensor) -> torch.Tensor:
        """Full prompt embeddings `[B, H + L, d_llm]` with `soft_tokens [B, n * K, d_llm]` in the slots."""
        return self.embed_body(llm, soft_tokens, with_head=True)


class PrefixCache:
    """Key/value cache of the frozen LLM over `prefix_ids` (or one row of `prefix_embeds [1, P, d_llm]`),
    computed once without gradients and handed out per batch (the LLM never changes, so every step would
    otherwise recompute the same prefix)."""

    def __init__(
        self, llm: PreTrainedModel, prefix_ids: Sequence[int] = (), prefix_embeds: torch.Tensor | None = None
    ):
        self.config = llm.config
        # transformers 5 renames forward's `past_key_values` to `cache` (the old name warns until 5.40)
        self.argument = "cache" if "cache" in inspect.signature(llm.forward).parameters else "past_key_values"
        cache = DynamicCache(config=llm.config)
        with torch.no_grad():
            if prefix_embeds is None:
                inputs = {"input_ids": torch.tensor([list(prefix_ids)], device=llm.device)}
            else:
                inputs = {"inputs_embeds": prefix_embeds.detach()}
            self.length = next(iter(inputs.values())).shape[1]
            llm(**inputs, use_cache=True, **{self.argument: cache})
        self.layers = [(layer.keys, layer.values) for layer in cache.layers]

    def for_batch(self, batch_size: int) -> dict[str, Any]:
        """Forward keyword arguments holding a fresh cache of the prefix for `batch_size` rows (extending it
        leaves this one unchanged)."""
        data = [(k.expand(batch_size, -1, -1, -1), v.expand(batch_size, -1, -1, -1)) for k, v in self.layers]
        return {self.argument: DynamicCache(ddp_cache_data=data, config=self.config), "use_cache": True}


@torch.inference_mode()
def generate_from_bodies(
    llm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, bodies: Sequence[torch.Tensor], max_new_tokens: int
) -> list[str]:
    """Greedy replies of the frozen LLM to whole prompt embeddings `[L_b, d_llm]` of any lengths (left-padded
    into one batch; the attention mask hides the padding)."""
    longest = max(len(b) for b in bodies)
    embeds = torch.zeros(len(bodies), longest, bodies[0].shape[1], dtype=bodies[0].dtype, device=bodies[0].device)
    mask = torch.zeros(len(bodies), longest, dtype=torch.long, device=bodies[0].device)
    for row, body in enumerate(bodies):
        embeds[row, longest - len(body) :] = body
        mask[row, longest - len(body) :] = 1
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = llm.generate(
        inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad
    )
    return [text.strip() for text in tokenizer.batch_decode(out, skip_special_tokens=True)]


def generate_from_soft_tokens(
    llm: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: ItemPrompt,
    soft_tokens: torch.Tensor,
    max_new_tokens: int,
) -> list[str]:
    """Greedy replies of the frozen LLM to `prompt` with `soft_tokens [B, n * K, d_llm]` in its slots."""
    with torch.inference_mode():
        bodies = list(prompt.embed(llm, soft_tokens))
    return generate_from_bodies(llm, tokenizer, bodies, max_new_tokens)
