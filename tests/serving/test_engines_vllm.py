"""The vLLM engines' own parts that need no vLLM: wire format, SSE parsing, error mapping, engine selection.

`RemoteVLLMEngine` runs here against an `httpx.MockTransport` that answers like vLLM's OpenAI server; the
real engines are checked against HF in `test_engine_contract.py`.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import sys

import httpx
import pytest
import torch

from serving.config import ServingConfig
from serving.engines import create_engine
from serving.engines.base import SamplingParams
from serving.engines.vllm import RemoteVLLMEngine, encode_prompt_embeds, import_vllm, sampling_options
from serving.errors import EngineUnavailableError, InvalidRequestError, PromptTooLongError

URL = "http://vllm.test"


def _sse(*chunks: dict) -> bytes:
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks).encode() + b"data: [DONE]\n\n"


class FakeVLLM:
    """Answers `/v1/models`, `/health` and streamed `/v1/completions` like vLLM; keeps the completion bodies."""

    def __init__(self, completion: httpx.Response | None = None):
        self.bodies: list[dict] = []
        self.completion = completion or httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            content=_sse(
                {"choices": [{"index": 0, "text": "Hel", "finish_reason": None}],
                 "usage": {"prompt_tokens": 3, "completion_tokens": 1}},
                {"choices": [{"index": 0, "text": "lo!", "finish_reason": None}],
                 "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
                {"choices": [{"index": 0, "text": "", "finish_reason": "length"}],
                 "usage": {"prompt_tokens": 3, "completion_tokens": 3}},
                {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6,
                                          "prompt_tokens_details": {"cached_tokens": 2}}},
            ),
        )

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "tiny", "max_model_len": 64}]})
        if request.url.path == "/health":
            return httpx.Response(200)
        assert request.url.path == "/v1/completions"
        self.bodies.append(json.loads(request.content))
        return self.completion


def _remote(tiny_llm, fake: FakeVLLM) -> RemoteVLLMEngine:
    return RemoteVLLMEngine(*tiny_llm, URL, transport=httpx.MockTransport(fake))


def test_prompt_embeds_wire_format_round_trips():
    prompt = torch.randn(5, 8, dtype=torch.float64)
    decoded = torch.load(io.BytesIO(base64.b64decode(encode_prompt_embeds(prompt))), weights_only=True)
    assert decoded.dtype == torch.float32 and decoded.is_contiguous()
    assert torch.equal(decoded, prompt.float())


def test_sampling_options_name_vllm_fields():
    params = SamplingParams(max_tokens=7, temperature=0.5, top_p=0.8, seed=3, stop=("\n", "!"))
    assert sampling_options(params, {9, 2}) == {
        "max_tokens": 7, "temperature": 0.5, "top_p": 0.8, "seed": 3, "stop": ["\n", "!"],
        "stop_token_ids": [2, 9], "skip_special_tokens": True,
    }


def test_remote_engine_streams_sse_deltas_with_usage(tiny_llm):
    model, tokenizer = tiny_llm
    fake = FakeVLLM()
    engine = _remote(tiny_llm, fake)
    assert engine.model_name == "tiny" and engine.health()
    prompt = torch.randn(3, engine.hidden_size)
    stream = engine.generate(prompt, SamplingParams(max_tokens=3, seed=1, stop=("x",)))
    assert list(stream) == ["Hel", "lo!"]
    usage = stream.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, stream.finish_reason) == (3, 3, 2, "length")
    body = fake.bodies[0]
    sent = torch.load(io.BytesIO(base64.b64decode(body.pop("prompt_embeds"))), weights_only=True)
    assert torch.equal(sent, prompt)
    assert body == {
        "model": "tiny", "max_tokens": 3, "temperature": 0.0, "top_p": 1.0, "seed": 1, "stop": ["x"],
        "stop_token_ids": [tokenizer.eos_token_id], "skip_special_tokens": True,
        "stream": True, "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    assert torch.equal(engine.embed_tokens([1, 2]), model.get_input_embeddings()(torch.tensor([1, 2])))


def test_remote_engine_checks_prompts_against_the_served_context(tiny_llm):
    engine = _remote(tiny_llm, FakeVLLM())
    with pytest.raises(PromptTooLongError, match="context is 64 tokens"):
        engine.generate(torch.zeros(60, engine.hidden_size), SamplingParams(max_tokens=5))
    with pytest.raises(InvalidRequestError, match="prompt embeddings must be"):
        engine.generate(torch.zeros(4, engine.hidden_size - 1), SamplingParams())


@pytest.mark.parametrize(
    ("status", "error"), [(400, InvalidRequestError), (404, EngineUnavailableError), (500, EngineUnavailableError)]
)
def test_remote_engine_maps_server_errors(tiny_llm, status, error):
    answer = httpx.Response(status, json={"error": {"message": "prompt_embeds hidden_size 100 does not match"}})
    engine = _remote(tiny_llm, FakeVLLM(answer))
    with pytest.raises(error, match=f"answered {status}: prompt_embeds hidden_size 100"):
        "".join(engine.generate(torch.zeros(2, engine.hidden_size), SamplingParams()))


def test_remote_engine_raises_an_error_sent_mid_stream(tiny_llm):
    answer = httpx.Response(200, content=_sse({"error": {"message": "engine dead", "code": 500}}))
    engine = _remote(tiny_llm, FakeVLLM(answer))
    with pytest.raises(EngineUnavailableError, match="engine dead"):
        "".join(engine.generate(torch.zeros(2, engine.hidden_size), SamplingParams()))


def test_remote_engine_says_how_to_start_a_missing_server(tiny_llm):
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(EngineUnavailableError, match="vllm.entrypoints.openai.api_server"):
        RemoteVLLMEngine(*tiny_llm, URL, transport=httpx.MockTransport(refuse))


def test_closed_remote_engine_is_unavailable(tiny_llm):
    engine = _remote(tiny_llm, FakeVLLM())
    engine.close()
    assert not engine.health()
    with pytest.raises(EngineUnavailableError, match="closed"):
        engine.generate(torch.zeros(2, engine.hidden_size), SamplingParams())


def test_missing_vllm_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ImportError, match="make vllm"):
        import_vllm()


def test_create_engine_picks_the_configured_engine(tiny_llm, tiny_llm_dir):
    from serving.engines.transformers import TransformersEngine

    assert isinstance(create_engine(ServingConfig(), *tiny_llm, tiny_llm_dir), TransformersEngine)
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ImportError, match="make vllm"):
            create_engine(ServingConfig(engine="vllm"), *tiny_llm, tiny_llm_dir)
    with pytest.raises(ValueError):
        ServingConfig(engine="llama.cpp")
    with pytest.raises(ValueError):
        ServingConfig(vllm_url="127.0.0.1:8001")
