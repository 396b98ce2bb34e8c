"""The LLM engine interface: an embedded prompt `[T, H]` plus sampling parameters in, streamed text out.

Entrypoints depend only on `LLMEngine`; `TransformersEngine` is the in-process default and vLLM engines fit
behind the same ABC. Prompts are always built server-side from catalogue ids (`serving.prompts`).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from transformers import PreTrainedTokenizerBase

MAX_TOKENS_CAP = 1024
"""Hard cap on `max_tokens` for one request, whatever the client asks."""

MAX_STOP_STRINGS = 4

FinishReason = Literal["stop", "length"]


class SamplingParams(BaseModel):
    """How to decode. `temperature == 0` is greedy; otherwise sampling with nucleus `top_p`, seeded by `seed`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens: int = Field(48, ge=1, le=MAX_TOKENS_CAP, description="Most new tokens to generate.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 = greedy; higher = more random.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus mass kept when sampling.")
    seed: int | None = Field(None, description="Seed for sampling; None draws a fresh one per request.")
    stop: tuple[str, ...] = Field((), description="Generation ends before the first of these strings.")

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, stop: tuple[str, ...]) -> tuple[str, ...]:
        if len(stop) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings are allowed, got {len(stop)}")
        if any(not s for s in stop):
            raise ValueError("stop strings must be non-empty")
        return stop


class Usage(BaseModel):
    """Token counts of one generation (OpenAI's `usage`)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = Field(0, description="Prompt tokens whose KV came from the prefix cache (0 if not reported).")

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class GenerationStream(Iterator[str]):
    """Text deltas of one generation; `usage` and `finish_reason` are final once it is exhausted.

    `produce(stream)` is the engine's decode loop: a generator that yields text deltas and updates
    `stream.usage.completion_tokens` and `stream.finish_reason` as it goes. `close()` stops it early and
    frees what it holds (e.g. the engine lock).

    An engine that serves one generation at a time passes `queued=True` and calls `admit()` once this one
    has the engine, before prefill: until then it is waiting in the engine's queue, which
    `serving.engines.deadline.generate_within` bounds apart from the generation itself. Other streams are
    admitted when created.
    """

    def __init__(self, prompt_tokens: int, produce: Callable[[GenerationStream], Iterator[str]], *,
                 queued: bool = False):
        self.usage = Usage(prompt_tokens=prompt_tokens)
        self.finish_reason: FinishReason | None = None
        self.admitted = threading.Event()
        self._withdrawn = False
        self._admission = threading.Lock()
        if not queued:
            self.admitted.set()
        self._deltas = produce(self)

    def __next__(self) -> str:
        return next(self._deltas)

    def close(self) -> None:
        self._deltas.close()

    def admit(self) -> bool:
        """Called by the engine when it starts this generation; False if it was withdrawn while queued (the
        engine then returns without decoding)."""
        with self._admission:
            if not self._withdrawn:
                self.admitted.set()
            return not self._withdrawn

    def withdraw(self) -> bool:
        """Give up a queued generation: True if it was not admitted yet (the engine will skip it), False
        if it already started."""
        with self._admission:
            self._withdrawn = not self.admitted.is_set()
            return self._withdrawn


class LLMEngine(ABC):
    """A frozen chat LLM that decodes from prompt embeddings."""

    @property
    @abstractmethod
    def hidden_size(self) -> int:
        """Width H of the model's input embeddings."""

    @property
    @abstractmethod
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The model's tokenizer (with its chat template)."""

    @abstractmethod
    def embed_tokens(self, token_ids: Sequence[int]) -> torch.Tensor:
        """Input embeddings of token ids, `[T, H]` float32."""

    @abstractmethod
    def generate(self, prompt_embeds: torch.Tensor, params: SamplingParams) -> GenerationStream:
        """Stream the reply to `prompt_embeds` `[T, H]` as text deltas.

        Stops at an end-of-sequence token (finish "stop"), before the first stop string (finish "stop",
        the stop string itself not emitted), or after `params.max_tokens` tokens (finish "length").
        """

    @abstractmethod
    def health(self) -> bool:
        """True when the engine can serve a request now."""

    @abstractmethod
    def close(self) -> None:
        """Release the model; later calls raise EngineUnavailableError."""
