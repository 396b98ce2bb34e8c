"""Time limits on one generation, and engine failures as 503s: no request waits on a stuck or busy LLM.

`generate_within` starts the engine's decode loop in a worker thread at once and hands its deltas over a
queue. Two limits apply, one after the other:
- the queue wait: a stream the engine has not admitted (`GenerationStream.admit`, for engines that serve one
  generation at a time) within `queue_timeout_s` is withdrawn, and `generate_within` itself raises
  `EngineBusyError` (HTTP 503 with Retry-After), so the request fails before anything is streamed;
- the generation: from admission, the caller waits at most `timeout_s` for the reply to finish, then gets
  `EngineTimeoutError` (HTTP 504). The worker is told to stop and closes the engine's stream at its next
  delta (a call stuck inside the engine cannot be interrupted from Python; it finishes in the background).
Errors from the engine that are not `ServingError`s become `EngineUnavailableError` (HTTP 503); their
details go to the log only.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator

import torch

from serving.engines.base import GenerationStream, LLMEngine, SamplingParams
from serving.errors import EngineBusyError, EngineTimeoutError, EngineUnavailableError, ServingError

log = logging.getLogger(__name__)

_END = object()


def generate_within(
    engine: LLMEngine, timeout_s: float, prompt_embeds: torch.Tensor, params: SamplingParams,
    queue_timeout_s: float | None = None,
) -> GenerationStream:
    """`engine.generate(prompt_embeds, params)`, started within `queue_timeout_s` seconds (EngineBusyError
    otherwise; None waits as long as it takes) and finished within `timeout_s` seconds of starting
    (EngineTimeoutError otherwise). Blocks until the engine has admitted the generation."""
    for name, value in (("timeout_s", timeout_s), ("queue_timeout_s", queue_timeout_s)):
        if value is not None and value <= 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    try:
        inner = engine.generate(prompt_embeds, params)
    except ServingError:
        raise
    except Exception as exc:
        raise _failed(exc) from None
    handoff: queue.Queue[object] = queue.Queue()
    stop = threading.Event()
    threading.Thread(target=_pump, args=(inner, handoff, stop), daemon=True, name="ilmrec-generation").start()
    if not inner.admitted.wait(queue_timeout_s) and inner.withdraw():
        stop.set()
        raise EngineBusyError(
            f"the LLM engine is busy: this reply did not start within {queue_timeout_s:g} s; retry shortly"
        )
    deadline = time.monotonic() + timeout_s

    def produce(stream: GenerationStream) -> Iterator[str]:
        try:
            while True:
                try:
                    item = handoff.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    raise EngineTimeoutError(
                        f"the LLM engine did not finish the reply within {timeout_s:g} s; retry shortly"
                    ) from None
                if item is _END:
                    stream.usage = inner.usage.model_copy()
                    stream.finish_reason = inner.finish_reason
                    return
                if isinstance(item, BaseException):
                    raise item
                delta, stream.usage = item  # type: ignore[misc]
                yield delta
        finally:
            stop.set()

    bounded = _Bounded(inner.usage.prompt_tokens, produce, stop)
    bounded.usage = inner.usage.model_copy()
    return bounded


class _Bounded(GenerationStream):
    """The caller's side; closing it stops the worker even before the first delta was asked for."""

    def __init__(self, prompt_tokens: int, produce: Callable[[GenerationStream], Iterator[str]],
                 stop: threading.Event):
        super().__init__(prompt_tokens, produce)
        self._stop = stop

    def close(self) -> None:
        self._stop.set()
        super().close()


def _pump(inner: GenerationStream, handoff: queue.Queue[object], stop: threading.Event) -> None:
    """The worker: move deltas from the engine to the queue until done, failed or told to stop."""
    try:
        for delta in inner:
            if stop.is_set():
                return
            # the usage as of this delta: the caller's count stops where it stopped reading, however far
            # the engine got before it saw the stop (a streamed and a non-streamed reply count alike)
            handoff.put((delta, inner.usage.model_copy()))
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
