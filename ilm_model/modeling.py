"""`ItemLanguageModel`: the Q-Former, its phase-1 heads, and the linear adaptor into the LLM's embedding space.

Saved as a folder: `config.json` (ILMConfig), `model.safetensors` (state dict) and the text tokenizer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from transformers import AutoTokenizer, BatchEncoding, PreTrainedTokenizerBase
from transformers.activations import ACT2FN

from ilm_model import text_encoder
from ilm_model.atomic_dir import atomic_directory
from ilm_model.configuration import ILMConfig
from ilm_model.errors import CheckpointError
from ilm_model.qformer import QFormer

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "ilmrec-item-language-model"
FORMAT_VERSION = "1"


@dataclass
class ItemRepresentations:
    """What the Q-Former makes of items: ITC features `[n, K, d]` and LLM soft tokens `[n, K, d_llm]`."""

    itc_features: torch.Tensor
    soft_tokens: torch.Tensor


class TextGenerationHead(nn.Module):
    """BERT-style LM head for ITG: dense -> activation -> LayerNorm -> logits against the tied word embeddings."""

    def __init__(self, hidden_size: int, vocab_size: int, hidden_act: str, layer_norm_eps: float):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.activation = ACT2FN[hidden_act]
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(
        self, hidden: torch.Tensor, word_embeddings: torch.Tensor, vocabulary: torch.Tensor | None = None
    ) -> torch.Tensor:
        """hidden `[..., H]`, word_embeddings `[V, H]` -> logits `[..., V]`, or `[..., |vocabulary|]` over the
        token ids `vocabulary` only."""
        bias = self.bias
        if vocabulary is not None:
            word_embeddings, bias = word_embeddings[vocabulary], bias[vocabulary]
        return F.linear(self.norm(self.activation(self.dense(hidden))), word_embeddings, bias)


class ItemLanguageModel(nn.Module):
    """Q-Former over CF item embeddings + ITC projections/temperature, ITG and ITM heads + adaptor to the LLM.

    `soft_tokens(cf)` is what the frozen LLM reads in place of `{item}`.
    """

    def __init__(self, config: ILMConfig, tokenizer: PreTrainedTokenizerBase | None = None):
        super().__init__()
        if config.llm_hidden_size is None or config.qformer.cf_embedding_size is None:
            raise ValueError("ILMConfig needs llm_hidden_size and qformer.cf_embedding_size; use config.for_data()")
        self.config = config
        self.tokenizer = tokenizer if tokenizer is not None else text_encoder.load_tokenizer()
        qcfg = config.qformer
        if len(self.tokenizer) > qcfg.vocab_size:
            raise ValueError(f"tokenizer has {len(self.tokenizer)} tokens but qformer.vocab_size is {qcfg.vocab_size}")
        hidden = qcfg.hidden_size
        self.qformer = QFormer(qcfg)
        self.item_projection = nn.Linear(hidden, qcfg.embed_dim)
        self.text_projection = nn.Linear(hidden, qcfg.embed_dim)
        self.temperature = nn.Parameter(torch.tensor(qcfg.initial_temperature))
        self.itg_head = TextGenerationHead(hidden, qcfg.vocab_size, qcfg.hidden_act, qcfg.layer_norm_eps)
        self.itm_head = nn.Linear(hidden, 2)
        self.adaptor = nn.Linear(hidden, config.llm_hidden_size)
        for linear in (self.item_projection, self.text_projection, self.itg_head.dense, self.itm_head, self.adaptor):
            nn.init.normal_(linear.weight, std=qcfg.initializer_range)
            nn.init.zeros_(linear.bias)

    @classmethod
    def from_config(cls, config: ILMConfig) -> ItemLanguageModel:
        """A fresh model; the text branch is copied from `config.qformer.text_encoder` when one is named."""
        model = cls(config)
        if config.qformer.text_encoder is not None:
            model.qformer.load_text_encoder(text_encoder.load_state_dict())
        return model

    @property
    def num_query_tokens(self) -> int:
        return self.config.qformer.num_query_tokens

    def tokenize(self, texts: Sequence[str]) -> BatchEncoding:
        """Item texts -> `input_ids`, `attention_mask` `[B, T]`, padded to the longest, cut at max_text_length."""
        return self.tokenizer(
            list(texts),
            padding="longest",
            truncation=True,
            max_length=self.config.qformer.max_text_length,
            return_tensors="pt",
            return_token_type_ids=False,
        )

    def temperature_value(self) -> torch.Tensor:
        """The learned ITC temperature clamped into `qformer.temperature_bounds`."""
        low, high = self.config.qformer.temperature_bounds
        return self.temperature.clamp(low, high)

    def item_features(self, query_states: torch.Tensor) -> torch.Tensor:
        """Query outputs `[B, K, H]` -> L2-normalised ITC item features `[B, K, d]`."""
        return F.normalize(self.item_projection(query_states), dim=-1)

    def text_features(self, text_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Text outputs `[B, T, H]` (real tokens where `attention_mask [B, T]` is 1; all when None) -> L2-normalised
        ITC feature `[B, d]` of the pooled text: normalize(W pool(h) + b), pool = masked mean over tokens, or the
        [CLS] position (`qformer.text_pooling`)."""
        if self.config.qformer.text_pooling == "cls":
            pooled = text_states[:, 0]
        else:
            if attention_mask is None:
                attention_mask = torch.ones(text_states.shape[:2], device=text_states.device)
            weights = attention_mask.to(text_states.dtype)[..., None]
            pooled = (text_states * weights).sum(1) / weights.sum(1).clamp(min=1)
        return F.normalize(self.text_projection(pooled), dim=-1)

    def encode_items(self, cf_embeddings: torch.Tensor) -> torch.Tensor:
        """CF item vectors `[B, d_cf]` -> ITC item features `[B, K, d]` (text->item score: max over K of dot)."""
        return self.item_features(self.qformer(cf_embeddings=cf_embeddings).query_states)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts (descriptions, chat requests) -> ITC text features `[B, d]`."""
        batch = self.tokenize(texts).to(self.adaptor.weight.device)
        states = self.qformer(input_ids=batch["input_ids"], text_attention_mask=batch["attention_mask"]).text_states
        return self.text_features(states, batch["attention_mask"])

    def itg_logits(self, text_states: torch.Tensor, vocabulary: torch.Tensor | None = None) -> torch.Tensor:
        """Text outputs of a causal pass `[..., H]` -> next-token logits `[..., vocab]` (or over the token ids
        `vocabulary [V']` only)."""
        return self.itg_head(text_states, self.qformer.word_embeddings.weight, vocabulary)

    def itm_logits(self, query_states: torch.Tensor) -> torch.Tensor:
        """Query outputs of a bidirectional pass `[B, K, H]` -> match logits `[B, 2]` (mean over queries)."""
        return self.itm_head(query_states).mean(dim=1)

    def soft_tokens(self, cf_embeddings: torch.Tensor) -> torch.Tensor:
        """CF item vectors `[B, d_cf]` -> soft tokens `[B, K, d_llm]` for the frozen LLM."""
        return self.adaptor(self.qformer(cf_embeddings=cf_embeddings).query_states)

    @torch.inference_mode()
    def represent_items(self, cf_embeddings: torch.Tensor, batch_size: int = 256) -> ItemRepresentations:
        """ITC features and soft tokens of many items `[n, d_cf]` from one query pass per batch (eval mode)."""
        was_training = self.training
        self.eval()
        features, tokens = [], []
        for start in range(0, len(cf_embeddings), batch_size):
            states = self.qformer(cf_embeddings=cf_embeddings[start : start + batch_size]).query_states
            features.append(self.item_features(states))
            tokens.append(self.adaptor(states))
        self.train(was_training)
        return ItemRepresentations(itc_features=torch.cat(features), soft_tokens=torch.cat(tokens))

    def save_pretrained(self, directory: Path) -> None:
        """Write config, weights and tokenizer into `directory` atomically (it is replaced if present)."""
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        with atomic_directory(Path(directory)) as tmp:
            (tmp / CONFIG_NAME).write_text(self.config.model_dump_json(indent=2))
            save_file(state, tmp / WEIGHTS_NAME, metadata={"format": FORMAT, "version": FORMAT_VERSION})
            self.tokenizer.save_pretrained(tmp)

    @classmethod
    def from_pretrained(cls, directory: Path, llm_hidden_size: int | None = None) -> ItemLanguageModel:
        """Load a folder written by `save_pretrained` (in eval mode).

        Raises CheckpointError listing missing, unexpected and mis-shaped tensors, or when `llm_hidden_size`
        (the LLM it will feed) differs from the one it was trained for.
        """
        directory = Path(directory)
        try:
            stored_config = json.loads((directory / CONFIG_NAME).read_text())
            # checkpoints from before `text_pooling` existed were trained on the [CLS] state
            stored_config.get("qformer", {}).setdefault("text_pooling", "cls")
            config = ILMConfig.model_validate(stored_config)
            tokenizer = AutoTokenizer.from_pretrained(directory)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{directory}: not an ItemLanguageModel checkpoint ({exc})") from None
        if llm_hidden_size is not None and llm_hidden_size != config.llm_hidden_size:
            raise CheckpointError(
                f"{directory} was trained for an LLM of hidden size {config.llm_hidden_size}, but this LLM has "
                f"{llm_hidden_size}; retrain the ILM with this LLM"
            )
        model = cls(config, tokenizer)
        own = model.state_dict()
        with safe_open(directory / WEIGHTS_NAME, framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise CheckpointError(f"{directory / WEIGHTS_NAME}: not an {FORMAT} file (metadata {metadata})")
            stored = {key: handle.get_tensor(key) for key in handle.keys()}
        missing = sorted(own.keys() - stored.keys())
        unexpected = sorted(stored.keys() - own.keys())
        shapes = {
            k: (tuple(stored[k].shape), tuple(own[k].shape))
            for k in own.keys() & stored.keys()
            if stored[k].shape != own[k].shape
        }
        if missing or unexpected or shapes:
            raise CheckpointError(
                f"{directory}: weights do not match its config.json. missing: {missing}; unexpected: {unexpected}; "
                f"shape (stored, expected): {shapes}. Re-save the model or fix config.json."
            )
        model.load_state_dict(stored)
        return model.eval()
