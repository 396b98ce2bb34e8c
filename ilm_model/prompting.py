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
_ITEM_MARKER = "<<ilmrec-item-soft-tokens>>"
_ANSWER_MARKER = "<<ilmrec-answer>>"


@dataclass
class ItemPrompt:
    """A generation-ready chat prompt split at `{item}`: `prefix_ids` [soft tokens] `suffix_ids`, and
    `answer_end`, the text the template closes an assistant answer with (e.g. "<|im_end|>")."""

    prefix_ids: list[int]
    suffix_ids: list[int]
    answer_end: str

    @classmethod
    def build(
        cls, tokenizer: PreTrainedTokenizerBase, instruction: str, system_prompt: str | None = None
    ) -> ItemPrompt:
        """Render `instruction` (with one `{item}`) as the user turn of `tokenizer`'s chat template."""
        if instruction.count(PLACEHOLDER) != 1:
            raise ILMError(f"the instruction must contain {PLACEHOLDER} exactly once: {instruction!r}")
        messages = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
        messages.append({"role": "user", "content": instruction.replace(PLACEHOLDER, _ITEM_MARKER)})
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": _ANSWER_MARKER}], tokenize=False
        )
        if prompt.count(_ITEM_MARKER) != 1 or not full.startswith(prompt) or _ANSWER_MARKER not in full:
            raise ILMError("the chat template does not keep the user text and answer verbatim; use another LLM")
        before, after = prompt.split(_ITEM_MARKER)
        return cls(
            prefix_ids=tokenizer(before, add_special_tokens=False)["input_ids"],
            suffix_ids=tokenizer(after, add_special_tokens=False)["input_ids"],
            answer_end=full[len(prompt) :].split(_ANSWER_MARKER, 1)[1].rstrip(),
        )

    def answer_ids(self, tokenizer: PreTrainedTokenizerBase, answer: str, max_tokens: int) -> list[int]:
        """Token ids of `answer` followed by the template's end of turn, cut to `max_tokens`."""
        return tokenizer(answer + self.answer_end, add_special_tokens=False)["input_ids"][:max_tokens]

    def embed(self, llm: PreTrainedModel, soft_tokens: torch.Tensor) -> torch.Tensor:
        """Prompt embeddings `[B, P + K + S, d_llm]` with `soft_tokens [B, K, d_llm]` in place of `{item}`."""
        embed = llm.get_input_embeddings()
        device = soft_tokens.device
        batch = soft_tokens.shape[0]
        prefix = embed(torch.tensor(self.prefix_ids, device=device))[None].expand(batch, -1, -1)
        suffix = embed(torch.tensor(self.suffix_ids, device=device))[None].expand(batch, -1, -1)
        return torch.cat([prefix, soft_tokens.to(prefix.dtype), suffix], dim=1)


class PrefixCache:
    """Key/value cache of the frozen LLM over `prefix_ids`, computed once without gradients and handed out
    per batch (the LLM never changes, so every step would otherwise recompute the same prefix)."""

    def __init__(self, llm: PreTrainedModel, prefix_ids: Sequence[int]):
        self.config = llm.config
        self.length = len(prefix_ids)
        # transformers 5 renames forward's `past_key_values` to `cache` (the old name warns until 5.40)
        self.argument = "cache" if "cache" in inspect.signature(llm.forward).parameters else "past_key_values"
        cache = DynamicCache(config=llm.config)
        with torch.no_grad():
            ids = torch.tensor([list(prefix_ids)], device=llm.device)
            llm(input_ids=ids, use_cache=True, **{self.argument: cache})
        self.layers = [(layer.keys, layer.values) for layer in cache.layers]

    def for_batch(self, batch_size: int) -> dict[str, Any]:
        """Forward keyword arguments holding a fresh cache of the prefix for `batch_size` rows (extending it
        leaves this one unchanged)."""
        data = [(k.expand(batch_size, -1, -1, -1), v.expand(batch_size, -1, -1, -1)) for k, v in self.layers]
        return {self.argument: DynamicCache(ddp_cache_data=data, config=self.config), "use_cache": True}


@torch.inference_mode()
def generate_from_soft_tokens(
    llm: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: ItemPrompt,
    soft_tokens: torch.Tensor,
    max_new_tokens: int,
) -> list[str]:
    """Greedy replies of the frozen LLM to `prompt` with `soft_tokens [B, K, d_llm]` spliced in (one per row)."""
    embeds = prompt.embed(llm, soft_tokens)
    mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = llm.generate(
        inputs_embeds=embeds,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=pad,
    )
    return [text.strip() for text in tokenizer.batch_decode(out, skip_special_tokens=True)]
