"""Baselines the ILM is compared with, behind the same item -> prompt-block interface.

- `CFAdaptorBaseline` (CoLLM-style): soft tokens straight from the raw CF embedding by an MLP, trained in
  phase 2 exactly like the ILM (`soft_tokens`, parameters under `adaptor.`).
- A Q-Former without phase 1 is the ILM itself with `qformer.text_encoder=None` and `phase1.steps=0`.
- Text-only prompts: `title_blocks` puts each item's embedded title where its soft tokens would go.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from retrieval.catalogue import Movie


class CFAdaptorBaseline(nn.Module):
    """soft_tokens(c) = reshape(W2 gelu(W1 c + b1) + b2, [K, d_llm]) for a CF vector c `[d_cf]`."""

    def __init__(self, cf_embedding_size: int, num_tokens: int, llm_hidden_size: int, hidden_size: int = 512):
        super().__init__()
        self.num_tokens, self.llm_hidden_size = num_tokens, llm_hidden_size
        self.adaptor = nn.Sequential(
            nn.Linear(cf_embedding_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, num_tokens * llm_hidden_size)
        )

    def soft_tokens(self, cf_embeddings: torch.Tensor) -> torch.Tensor:
        """CF item vectors `[B, d_cf]` -> soft tokens `[B, K, d_llm]`."""
        return self.adaptor(cf_embeddings).view(-1, self.num_tokens, self.llm_hidden_size)

    @torch.inference_mode()
    def represent_soft_tokens(self, cf_embeddings: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Soft tokens of many items `[n, K, d_llm]` in eval mode."""
        was_training = self.training
        self.eval()
        starts = range(0, len(cf_embeddings), batch_size)
        out = torch.cat([self.soft_tokens(cf_embeddings[i : i + batch_size]) for i in starts])
        self.train(was_training)
        return out


@torch.inference_mode()
def title_blocks(
    llm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, movies: Sequence[Movie]
) -> list[torch.Tensor]:
    """The text-only baseline's item blocks: the LLM's input embeddings of each `Title (Year)`, `[T_i, d_llm]`."""
    embed = llm.get_input_embeddings()
    ids = tokenizer([m.display_title for m in movies], add_special_tokens=False)["input_ids"]
    return [embed(torch.tensor(row, dtype=torch.long, device=llm.device)) for row in ids]
