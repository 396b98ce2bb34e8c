"""A time limit on one generation, and engine failures as 503s: no request waits on a stuck LLM.

`generate_within` runs the engine's decode loop in a worker thread and hands its deltas over a queue; the
caller waits at most until the deadline (`timeout_s` after the first delta was asked for) and then gets
`EngineTimeoutError` (HTTP 504). The worker is told to stop and closes the engine's stream at its next delta
(a call stuck inside the engine cannot be interrupted from Python; it finishes in the background, and later
requests that queue behind it time out the same way instead of hanging). Errors from the engine that are
not `ServingError`s become `EngineUnavailableError` (HTTP 503); their details go to the log only.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator

import torch

from serving.engines.base import GenerationStream, LLMEngine, SamplingParams
from serving.errors import EngineTimeoutError, EngineUnavailableError, ServingError

log = logging.getLogger(__name__)

_END = object()


def generate_within(
    engine: LLMEngine, timeout_s: float, prompt_embeds: torch.Tensor, params: SamplingParams
) -> GenerationStream:
    """`engine.generate(prompt_embeds, params)`, finished within `timeout_s` seconds or EngineTimeoutError."""
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    try:
        inner = engine.generate(prompt_embeds, params)
    except ServingError:
        raise
    except Exception as exc:
        raise _failed(exc) from None

    def produce(stream: GenerationStream) -> Iterator[str]:
        handoff: queue.Queue[object] = queue.Queue()
        stop = threading.Event()
        threading.Thread(target=_pump, args=(inner, stream, handoff, stop), daemon=True,
                         name="ilmrec-generation").start()
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    item = handoff.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    raise EngineTimeoutError(
                        f"the LLM engine did not finish the reply within {timeout_s:g} s; retry shortly"
                    ) from None
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            stop.set()

    bounded = GenerationStream(inner.usage.prompt_tokens, produce)
    bounded.usage = inner.usage  # the engine counts completion tokens into it as it decodes
    return bounded


def _pump(inner: GenerationStream, outer: GenerationStream, handoff: queue.Queue[object],
          stop: threading.Event) -> None:
    """The worker: move deltas from the engine to the queue until done, failed or told to stop."""
    try:
        for delta in inner:
            if stop.is_set():
                return
            handoff.put(delta)
        outer.finish_reason = inner.finish_reason
        handoff.put(_END)
    except ServingError as exc:
        handoff.put(exc)
    except Exception as exc:  # noqa: BLE001 - any engine failure becomes a clean 503
        handoff.put(_failed(exc))
    finally:
        inner.close()


def _failed(exc: Exception) -> EngineUnavailableError:
    log.error("the LLM engine failed", exc_info=exc)
    return EngineUnavailableError("the LLM engine failed while generating; retry shortly")
