"""Engines for reliability tests, each wrapping a real one: echo the prompt, go slow, fail, or get stuck."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence

import torch

from serving.engines.base import GenerationStream, LLMEngine, SamplingParams


class DelegatingEngine(LLMEngine):
    """Everything from `inner`; subclasses change `generate`."""

    def __init__(self, inner: LLMEngine):
        self.inner = inner

    @property
    def hidden_size(self) -> int:
        return self.inner.hidden_size

    @property
    def tokenizer(self):
        return self.inner.tokenizer

    def embed_tokens(self, token_ids: Sequence[int]) -> torch.Tensor:
        return self.inner.embed_tokens(token_ids)

    def generate(self, prompt_embeds: torch.Tensor, params: SamplingParams) -> GenerationStream:
        return self.inner.generate(prompt_embeds, params)

    def health(self) -> bool:
        return self.inner.health()

    def close(self) -> None:
        self.inner.close()

    def _wrapped(self, inner: GenerationStream, before_each: Callable[[], None],
                 at_end: Callable[[], None] = lambda: None) -> GenerationStream:
        """`inner`'s deltas, calling `before_each()` before each is passed on and `at_end()` after the last."""

        def produce(stream: GenerationStream) -> Iterator[str]:
            try:
                for delta in inner:
                    before_each()
                    yield delta
                at_end()
                stream.finish_reason = inner.finish_reason
            finally:
                inner.close()

        wrapped = GenerationStream(inner.usage.prompt_tokens, produce)
        wrapped.usage = inner.usage
        return wrapped


class EchoEngine(DelegatingEngine):
    """Replies with the text of its prompt (every row that is a token embedding, decoded): the worst case of
    a model that obeys "repeat everything you were told". `prompts` keeps every prompt text it was given."""

    def __init__(self, inner: LLMEngine):
        super().__init__(inner)
        self._table = inner.embed_tokens(range(len(inner.tokenizer)))  # [V, H]
        self.prompts: list[str] = []
        self._lock = threading.Lock()

    def generate(self, prompt_embeds: torch.Tensor, params: SamplingParams) -> GenerationStream:
        matches = (prompt_embeds[:, None, :] == self._table[None]).all(-1)  # [T, V]
        ids = [int(row.nonzero()[0]) if row.any() else None for row in matches]
        segments, current = [], []
        for token in [*ids, None]:
            if token is None:
                if current:
                    segments.append(self.tokenizer.decode(current))
                current = []
            else:
                current.append(token)
        text = " ".join(" ".join(segments).split())  # one line: the reply sentence ends at a newline
        with self._lock:
            self.prompts.append(text)

        def produce(stream: GenerationStream) -> Iterator[str]:
            stream.usage.completion_tokens = 1
            stream.finish_reason = "stop"
            yield text

        return GenerationStream(len(ids), produce)


class SlowEngine(DelegatingEngine):
    """A pause of `delay_s` before each text delta and after the last one."""

    def __init__(self, inner: LLMEngine, delay_s: float):
        super().__init__(inner)
        self.delay_s = delay_s

    def generate(self, prompt_embeds: torch.Tensor, params: SamplingParams) -> GenerationStream:
        pause = lambda: time.sleep(self.delay_s)  # noqa: E731
        return self._wrapped(self.inner.generate(prompt_embeds, params), pause, at_end=pause)


class FailingEngine(DelegatingEngine):
    """Raises `error` when asked to generate (`when="start"`) or after the first delta (`when="midway"`)."""

    def __init__(self, inner: LLMEngine, error: Exception, when: str = "midway"):
        super().__init__(inner)
        self.error, self.when = error, when

    def generate(self, prompt_embeds: torch.Tensor, params: SamplingParams) -> GenerationStream:
        if self.when == "start":
            raise self.error
        deltas = 0

        def fail_after_first() -> None:
            nonlocal deltas
            deltas += 1
            if deltas > 1:
                raise self.error

        return self._wrapped(self.inner.generate(prompt_embeds, params), fail_after_first)


class StuckEngine(DelegatingEngine):
    """Blocks inside the decode loop until `release` is set (a hung GPU or a server that stopped answering)."""

    def __init__(self, inner: LLMEngine):
        super().__init__(inner)
        self.release = threading.Event()
        self.stuck = threading.Event()

    def generate(self, prompt_embeds: torch.Tensor, params: SamplingParams) -> GenerationStream:
        def wait() -> None:
            self.stuck.set()
            self.release.wait()

        return self._wrapped(self.inner.generate(prompt_embeds, params), wait)
