"""In-process engine over a Hugging Face causal LM: prefill from `inputs_embeds`, then a KV-cache decode loop.

float32 by default (`precision`: bfloat16, or int8 dynamic quantisation on the CPU, are faster and
approximate); one generation at a time, guarded by a lock held while a
stream is being consumed (the streams are `queued`: admitted once they hold the lock). Greedy decoding
matches `model.generate(inputs_embeds=..., do_sample=False)`.

Prefix reuse: the engine keeps the KV cache of the previous prompt, and a prompt that starts with at least
`MIN_REUSED_ROWS` of the same rows (the chat template's constant head, typically) prefills only the rest;
the reused rows are reported as `Usage.cached_tokens`. A row's KV depends only on the rows before it, so
the reply is the one a full prefill gives.
"""

from __future__ import annotations

import copy
import inspect
import logging
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import Literal

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from serving.engines.base import GenerationStream, LLMEngine, SamplingParams
from serving.errors import ConfigurationError, EngineUnavailableError, InvalidRequestError, PromptTooLongError
from serving.stop_strings import first_stop, held_back

log = logging.getLogger(__name__)

REPLACEMENT_CHAR = "\ufffd"  # what a byte-level tokenizer decodes a half-finished UTF-8 sequence to
MIN_REUSED_ROWS = 16
"""Fewer shared rows than this are prefilled again: copying the cache would cost about what it saves."""


Precision = Literal["float32", "bfloat16", "int8"]


class TransformersEngine(LLMEngine):
    """`LLMEngine` over `model` (any `*ForCausalLM`) and its `tokenizer` on the model's device, in `precision`
    (`serving.config.ServingConfig.llm_precision`); bfloat16 and int8 run a copy, `model` stays as it is."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, precision: Precision = "float32"):
        if model.dtype != torch.float32:
            log.info("casting the LLM from %s to float32 for serving", model.dtype)
            model = model.float()
        self._embeddings = model.get_input_embeddings()
        self._model: PreTrainedModel | None = _in_precision(model.eval(), precision)
        self._dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
        self._tokenizer = tokenizer
        self._device = next(model.parameters()).device
        self._max_len: int | None = getattr(model.config, "max_position_embeddings", None)
        self._eos_ids = _eos_token_ids(model, tokenizer)
        forward_params = inspect.signature(model.forward).parameters
        self._keep_last_logits = "logits_to_keep" in forward_params
        # transformers 5.2x renamed `past_key_values` to `cache` (the old name warns); accept either
        self._cache_arg = "cache" if "cache" in forward_params else "past_key_values"
        self._lock = threading.Lock()
        self._previous: tuple[torch.Tensor, object] | None = None  # (prompt rows, KV after its prefill)

    @property
    def hidden_size(self) -> int:
        return int(self._embeddings.embedding_dim)

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self._tokenizer

    def embed_tokens(self, token_ids: Sequence[int]) -> torch.Tensor:
        """`[T, H]` float32 on the CPU."""
        ids = torch.as_tensor(list(token_ids), dtype=torch.long, device=self._device)
        with torch.inference_mode():
            return self._embeddings(ids).float().cpu()

    def generate(self, prompt_embeds: torch.Tensor, params: SamplingParams) -> GenerationStream:
        if self._model is None:
            raise EngineUnavailableError("the LLM engine is closed")
        if prompt_embeds.ndim != 2 or prompt_embeds.shape[0] == 0 or prompt_embeds.shape[1] != self.hidden_size:
            raise InvalidRequestError(
                f"prompt embeddings must be [T>0, {self.hidden_size}], got {list(prompt_embeds.shape)}"
            )
        if not prompt_embeds.is_floating_point():
            raise InvalidRequestError(f"prompt embeddings must be floating point, got {prompt_embeds.dtype}")
        n_prompt = int(prompt_embeds.shape[0])
        if self._max_len is not None and n_prompt + params.max_tokens > self._max_len:
            raise PromptTooLongError(
                f"the prompt has {n_prompt} tokens and max_tokens is {params.max_tokens}, but the model's "
                f"context is {self._max_len} tokens; shorten the conversation or lower max_tokens",
                param="max_tokens",
            )
        prompt = prompt_embeds.detach().to(self._device, self._dtype)
        return GenerationStream(n_prompt, lambda stream: self._decode(prompt, params, stream), queued=True)

    def health(self) -> bool:
        return self._model is not None

    def close(self) -> None:
        with self._lock:
            self._model = None
            self._previous = None

    def _decode(self, prompt: torch.Tensor, params: SamplingParams, stream: GenerationStream) -> Iterator[str]:
        """Prefill, then one token per step; yields text that can no longer turn into a stop string."""
        with self._lock:
            if self._model is None:
                raise EngineUnavailableError("the LLM engine is closed")
            if not stream.admit():
                return
            rng = torch.Generator(device=self._device)
            if params.seed is None:
                rng.seed()
            else:
                rng.manual_seed(params.seed)
            logits, cache = self._prefill(prompt, stream)
            token_ids: list[int] = []
            emitted = 0
            text = ""
            for step in range(params.max_tokens):
                token = _choose(logits, params, rng)
                stream.usage.completion_tokens += 1
                if token in self._eos_ids:
                    stream.finish_reason = "stop"
                    break
                token_ids.append(token)
                text = self._tokenizer.decode(token_ids, skip_special_tokens=True)
                stop_at = first_stop(text, params.stop)
                if stop_at is not None:
                    if stop_at > emitted:
                        yield text[emitted:stop_at]
                    stream.finish_reason = "stop"
                    return
                safe = len(text) - _held_back(text, params.stop)
                if safe > emitted:
                    yield text[emitted:safe]
                    emitted = safe
                if step + 1 < params.max_tokens:
                    logits, cache = self._forward(
                        input_ids=torch.tensor([[token]], device=self._device), **{self._cache_arg: cache}
                    )
            if stream.finish_reason is None:
                stream.finish_reason = "length"
            if len(text) > emitted:
                yield text[emitted:]

    def _prefill(self, prompt: torch.Tensor, stream: GenerationStream) -> tuple[torch.Tensor, object]:
        """The forward pass over `prompt` `[T, H]`, reusing the previous prompt's KV for the rows they share."""
        reused = _shared_rows(self._previous[0], prompt) if self._previous is not None else 0
        cache = self._reusable(reused) if reused >= MIN_REUSED_ROWS else None
        if cache is not None:
            logits, cache = self._forward(inputs_embeds=prompt[None, reused:], **{self._cache_arg: cache})
        else:
            reused = 0
            logits, cache = self._forward(inputs_embeds=prompt[None])
        stream.usage.cached_tokens = reused
        self._previous = (prompt, copy.deepcopy(cache))  # decoding extends `cache` in place
        return logits, cache

    def _reusable(self, rows: int) -> object | None:
        """A copy of the previous prompt's KV cut to its first `rows`, or None where the cache cannot be cut."""
        assert self._previous is not None
        cache = copy.deepcopy(self._previous[1])
        try:
            cache.crop(rows - cache.get_seq_length())  # a negative count removes that many from the end
        except (AttributeError, ValueError, RuntimeError, NotImplementedError):
            return None
        return cache

    def _forward(self, **inputs: object) -> tuple[torch.Tensor, object]:
        """Logits of the last position `[vocab]` and the updated KV cache."""
        if self._keep_last_logits:
            inputs["logits_to_keep"] = 1
        with torch.inference_mode():
            out = self._model(**inputs, use_cache=True)
        return out.logits[0, -1], getattr(out, self._cache_arg)


def _in_precision(model: PreTrainedModel, precision: Precision) -> PreTrainedModel:
    """`model` (float32) itself, or a bfloat16 copy, or a copy whose Linear layers are int8 (weights quantised
    once, activations per call: `torch.ao.quantization.quantize_dynamic`, whose fbgemm kernels are the fast
    int8 path on a CPU; torchao's replacement runs slower there without torch.compile)."""
    if precision == "float32":
        return model
    if precision == "bfloat16":
        return copy.deepcopy(model).to(torch.bfloat16)
    if next(model.parameters()).device.type != "cpu":
        raise ConfigurationError("llm_precision int8 (dynamic quantisation) runs on the CPU only; use bfloat16 on a GPU")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch.ao's notice pointing to torchao
        warnings.filterwarnings("ignore", message=".*quantize.*")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=False)


def _eos_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """End-of-sequence ids from the generation config and the tokenizer (chat models often have several)."""
    ids: set[int] = set()
    config_eos = getattr(model.generation_config, "eos_token_id", None) if model.generation_config else None
    for value in (config_eos, model.config.eos_token_id, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return frozenset(ids)


def _choose(logits: torch.Tensor, params: SamplingParams, rng: torch.Generator) -> int:
    """Next token from last-position logits `[vocab]`: argmax at temperature 0, else nucleus sampling."""
    if params.temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    sorted_probs, order = probs.sort(descending=True)
    # keep the smallest prefix whose mass reaches top_p (the most likely token always survives)
    keep = (sorted_probs.cumsum(0) - sorted_probs) < params.top_p
    choice = torch.multinomial(sorted_probs * keep, 1, generator=rng)
    return int(order[choice])


def _shared_rows(previous: torch.Tensor, prompt: torch.Tensor) -> int:
    """How many leading rows `prompt` shares exactly with `previous`, leaving at least one row to prefill."""
    n = min(previous.shape[0], prompt.shape[0] - 1)
    if n <= 0:
        return 0
    differs = (previous[:n] != prompt[:n]).any(dim=1).nonzero()
    return int(differs[0]) if len(differs) else n


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters to hold: an unfinished UTF-8 character or a possible stop-string start."""
    if text.endswith(REPLACEMENT_CHAR):
        return len(text) - len(text.rstrip(REPLACEMENT_CHAR))
    return held_back(text, stops)
