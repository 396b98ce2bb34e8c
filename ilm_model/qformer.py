"""The Q-Former over CF item embeddings, built on `transformers`' `Blip2QFormerModel`.

One transformer runs over `[queries; text]`. Queries and text share self-attention (which positions see which
is set by the attention mask), each has its own FFN copy, and only the first `num_query_tokens` positions
cross-attend to the CF key/value tokens. `transformers` 5 takes a 2-D padding mask or an already prepared
4-D mask `[B, 1, L, L]` (returned as-is by `create_bidirectional_mask`; a 3-D mask is not extended), so the
masks of the three objectives are built here as additive 4-D masks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel
from transformers.models.blip_2.modeling_blip_2 import Blip2TextEmbeddings

from ilm_model.configuration import QFormerConfig

logger = logging.getLogger(__name__)

AttentionKind = Literal["unimodal", "causal", "bidirectional"]


def joint_attention_mask(
    num_queries: int, text_mask: torch.Tensor, kind: AttentionKind, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Additive self-attention mask over `[queries; text]`, `[B, 1, K+T, K+T]` (0 = may attend, finfo.min = not).

    - `unimodal` (ITC): queries see queries, text sees text; the two streams do not mix.
    - `causal` (ITG): queries see queries only; text token t sees every query and text tokens <= t.
    - `bidirectional` (ITM): every position sees every position.
    Text padding (`text_mask == 0`, `[B, T]`) is never attended to.
    """
    batch, text_len = text_mask.shape
    total = num_queries + text_len
    is_query = torch.arange(total, device=text_mask.device) < num_queries
    row_q, col_q = is_query[:, None], is_query[None, :]
    if kind == "unimodal":
        allowed = row_q == col_q
    elif kind == "causal":
        position = torch.arange(total, device=text_mask.device)
        allowed = (row_q & col_q) | (~row_q & (col_q | (position[None, :] <= position[:, None])))
    elif kind == "bidirectional":
        allowed = torch.ones(total, total, dtype=torch.bool, device=text_mask.device)
    else:
        raise ValueError(f"unknown attention kind {kind!r}; use unimodal, causal or bidirectional")
    key_ok = torch.cat([torch.ones(batch, num_queries, dtype=torch.bool, device=text_mask.device), text_mask.bool()], 1)
    allowed = allowed[None, :, :] & key_ok[:, None, :]
    mask = torch.zeros(batch, 1, total, total, dtype=dtype, device=text_mask.device)
    return mask.masked_fill(~allowed[:, None], torch.finfo(dtype).min)


@dataclass
class QFormerOutput:
    """Last hidden states: `query_states [B, K, H]` (None without CF input), `text_states [B, T, H]` (None
    without text)."""

    query_states: torch.Tensor | None
    text_states: torch.Tensor | None


class QFormer(nn.Module):
    """K learned queries + CF key/value projection + text embeddings + `Blip2QFormerModel`."""

    def __init__(self, config: QFormerConfig):
        super().__init__()
        if config.cf_embedding_size is None:
            raise ValueError("QFormerConfig.cf_embedding_size is None; set it to the CF embedding width")
        self.config = config
        self.blip_config = Blip2QFormerConfig(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            intermediate_size=config.intermediate_size,
            hidden_act=config.hidden_act,
            hidden_dropout_prob=config.hidden_dropout_prob,
            attention_probs_dropout_prob=config.attention_probs_dropout_prob,
            max_position_embeddings=config.max_position_embeddings,
            initializer_range=config.initializer_range,
            layer_norm_eps=config.layer_norm_eps,
            cross_attention_frequency=config.cross_attention_frequency,
            encoder_hidden_size=config.cf_token_size,
            use_qformer_text_input=True,
        )
        std = config.initializer_range
        self.query_tokens = nn.Parameter(torch.randn(1, config.num_query_tokens, config.hidden_size) * std)
        self.cf_projection = nn.Linear(config.cf_embedding_size, config.num_cf_tokens * config.cf_token_size)
        self.cf_norm = nn.LayerNorm(config.cf_token_size, eps=config.layer_norm_eps)
        self.embeddings = Blip2TextEmbeddings(self.blip_config)
        self.encoder = Blip2QFormerModel(self.blip_config)
        for module in (self.cf_projection, self.embeddings.word_embeddings, self.embeddings.position_embeddings):
            nn.init.normal_(module.weight, std=std)
        nn.init.zeros_(self.cf_projection.bias)

    @property
    def word_embeddings(self) -> nn.Embedding:
        """Text token embeddings `[vocab, H]` (the ITG head is tied to them)."""
        return self.embeddings.word_embeddings

    def cf_tokens(self, cf_embeddings: torch.Tensor) -> torch.Tensor:
        """CF item vectors `[B, d_cf]` -> key/value tokens `[B, n_kv, d_kv]` (linear, then LayerNorm per token)."""
        cfg = self.config
        tokens = self.cf_projection(cf_embeddings).view(-1, cfg.num_cf_tokens, cfg.cf_token_size)
        return self.cf_norm(tokens)

    def forward(
        self,
        cf_embeddings: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        text_attention_mask: torch.Tensor | None = None,
        attention: AttentionKind = "unimodal",
    ) -> QFormerOutput:
        """Encode queries (given `cf_embeddings [B, d_cf]`), text (given `input_ids [B, T]`), or both jointly
        under the `attention` mask (see `joint_attention_mask`)."""
        if cf_embeddings is None and input_ids is None:
            raise ValueError("QFormer needs cf_embeddings, input_ids, or both")
        queries, memory, num_queries = None, None, 0
        if cf_embeddings is not None:
            memory = self.cf_tokens(cf_embeddings)
            queries = self.query_tokens.expand(cf_embeddings.shape[0], -1, -1)
            num_queries = queries.shape[1]
        embeds = self.embeddings(input_ids=input_ids, query_embeds=queries)
        mask = None
        if input_ids is not None:
            if text_attention_mask is None:
                text_attention_mask = torch.ones_like(input_ids)
            mask = joint_attention_mask(num_queries, text_attention_mask, attention, embeds.dtype)
        hidden = self.encoder(
            query_embeds=embeds, query_length=num_queries, attention_mask=mask, encoder_hidden_states=memory
        ).last_hidden_state
        return QFormerOutput(
            query_states=hidden[:, :num_queries] if num_queries else None,
            text_states=hidden[:, num_queries:] if input_ids is not None else None,
        )

    def load_text_encoder(self, bert_state: dict[str, torch.Tensor]) -> int:
        """Copy a BertModel state dict into self-attention, both FFN copies (text and query), word/position
        embeddings and layer norms; cross-attention and queries stay random. Returns the number of tensors copied.

        BERT adds token-type embedding 0 to every token; it is folded into the position embeddings (exact).
        """
        mapping: dict[str, torch.Tensor] = {
            "embeddings.word_embeddings.weight": bert_state["embeddings.word_embeddings.weight"],
            "embeddings.position_embeddings.weight": (
                bert_state["embeddings.position_embeddings.weight"][: self.config.max_position_embeddings]
                + bert_state["embeddings.token_type_embeddings.weight"][0]
            ),
            "encoder.layernorm.weight": bert_state["embeddings.LayerNorm.weight"],
            "encoder.layernorm.bias": bert_state["embeddings.LayerNorm.bias"],
        }
        for i in range(self.config.num_hidden_layers):
            src, dst = f"encoder.layer.{i}.", f"encoder.encoder.layer.{i}."
            for part in ("query", "key", "value"):
                for p in ("weight", "bias"):
                    mapping[f"{dst}attention.attention.{part}.{p}"] = bert_state[f"{src}attention.self.{part}.{p}"]
            for sub in ("dense", "LayerNorm"):
                for p in ("weight", "bias"):
                    mapping[f"{dst}attention.output.{sub}.{p}"] = bert_state[f"{src}attention.output.{sub}.{p}"]
                    for ffn in ("output", "output_query"):
                        mapping[f"{dst}{ffn}.{sub}.{p}"] = bert_state[f"{src}output.{sub}.{p}"]
            for p in ("weight", "bias"):
                for ffn in ("intermediate", "intermediate_query"):
                    mapping[f"{dst}{ffn}.dense.{p}"] = bert_state[f"{src}intermediate.dense.{p}"]
        own = self.state_dict()
        wrong = {k: (tuple(v.shape), tuple(own[k].shape)) for k, v in mapping.items() if own[k].shape != v.shape}
        if wrong:
            raise ValueError(f"text encoder shapes do not fit the Q-Former (given, expected): {wrong}")
        with torch.no_grad():
            for key, value in mapping.items():
                own[key].copy_(value)
        logger.info("Q-Former: initialised %d tensors from the text encoder; its cross-attention to the CF embedding "
                    "starts random and is learnt in phase 1", len(mapping))
        return len(mapping)
