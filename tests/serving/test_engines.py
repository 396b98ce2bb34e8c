"""TransformersEngine against Hugging Face `generate`, plus streaming, stop strings, sampling and limits."""

from __future__ import annotations

import threading

import pytest
import torch

from serving.engines.base import SamplingParams
from serving.errors import EngineUnavailableError, InvalidRequestError, PromptTooLongError


def _chat_ids(tokenizer, text: str) -> list[int]:
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
    return tokenizer(rendered, add_special_tokens=False)["input_ids"]


def _hf_greedy(model, prompt: torch.Tensor, n: int) -> list[int]:
    with torch.inference_mode():
        out = model.generate(
            inputs_embeds=prompt[None],
            attention_mask=torch.ones(1, prompt.shape[0], dtype=torch.long),
            max_new_tokens=n,
            do_sample=False,
        )
    return out[0].tolist()


def test_greedy_tokens_equal_hf_generate(engine, tiny_llm):
    model, tokenizer = tiny_llm
    prompt = engine.embed_tokens(_chat_ids(tokenizer, "I liked the movie Inception, can you recommend something?"))
    hf = _hf_greedy(model, prompt, 24)
    eos = [i for i, t in enumerate(hf) if t == tokenizer.eos_token_id]
    hf = hf[: eos[0] + 1] if eos else hf
    assert len(set(hf)) > 3, "the tiny model should produce diverse tokens (initializer_range=0.5)"
    stream = engine.generate(prompt, SamplingParams(max_tokens=24))
    text = "".join(stream)
    assert text == tokenizer.decode([t for t in hf if t != tokenizer.eos_token_id], skip_special_tokens=True)
    assert stream.usage.completion_tokens == len(hf)
    assert stream.finish_reason == ("stop" if eos else "length")


def test_injected_soft_rows_change_output(engine, tiny_llm):
    _, tokenizer = tiny_llm
    ids = _chat_ids(tokenizer, "You might like these movies")
    prompt = engine.embed_tokens(ids)
    rows = torch.randn(3, engine.hidden_size, generator=torch.Generator().manual_seed(1))
    injected = torch.cat([prompt[:5], rows, prompt[5:]])
    other = torch.cat([prompt[:5], -rows, prompt[5:]])
    params = SamplingParams(max_tokens=16)
    outputs = {"".join(engine.generate(p, params)) for p in (prompt, injected, other)}
    assert len(outputs) == 3


def test_stream_usage_and_finish_reason(engine, tiny_llm):
    _, tokenizer = tiny_llm
    prompt = engine.embed_tokens(_chat_ids(tokenizer, "Hello!"))
    stream = engine.generate(prompt, SamplingParams(max_tokens=5))
    deltas = list(stream)
    assert stream.usage.prompt_tokens == prompt.shape[0]
    assert 1 <= stream.usage.completion_tokens <= 5
    assert stream.finish_reason in ("stop", "length")
    assert all(isinstance(d, str) and d for d in deltas)


def test_stop_string_truncates(engine, tiny_llm):
    _, tokenizer = tiny_llm
    prompt = engine.embed_tokens(_chat_ids(tokenizer, "Recommend me a movie"))
    full = "".join(engine.generate(prompt, SamplingParams(max_tokens=24)))
    assert len(full) > 6
    stop = full[3:6]
    stream = engine.generate(prompt, SamplingParams(max_tokens=24, stop=(stop,)))
    truncated = "".join(stream)
    assert truncated == full[: full.find(stop)]
    assert stream.finish_reason == "stop"


def test_seeded_sampling_is_reproducible(engine, tiny_llm):
    _, tokenizer = tiny_llm
    prompt = engine.embed_tokens(_chat_ids(tokenizer, "Hello!"))
    params = SamplingParams(max_tokens=12, temperature=1.0, top_p=0.9, seed=7)
    first = "".join(engine.generate(prompt, params))
    assert first == "".join(engine.generate(prompt, params))
    others = {"".join(engine.generate(prompt, params.model_copy(update={"seed": s}))) for s in range(8)}
    assert len(others) > 1


def test_rejects_bad_prompts_and_params(engine):
    with pytest.raises(InvalidRequestError):
        engine.generate(torch.zeros(4, engine.hidden_size + 1), SamplingParams())
    with pytest.raises(InvalidRequestError):
        engine.generate(torch.zeros(0, engine.hidden_size), SamplingParams())
    with pytest.raises(PromptTooLongError):
        engine.generate(torch.zeros(2040, engine.hidden_size), SamplingParams(max_tokens=20))
    with pytest.raises(ValueError):
        SamplingParams(max_tokens=10**6)
    with pytest.raises(ValueError):
        SamplingParams(stop=("a", "b", "c", "d", "e"))


def test_one_generation_at_a_time(engine, tiny_llm):
    _, tokenizer = tiny_llm
    prompt = engine.embed_tokens(_chat_ids(tokenizer, "Hello!"))
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append("".join(engine.generate(prompt, SamplingParams(max_tokens=8)))))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len(set(results)) == 1
    # a stream closed half-way releases the lock
    stream = engine.generate(prompt, SamplingParams(max_tokens=8))
    next(stream, None)
    stream.close()
    assert "".join(engine.generate(prompt, SamplingParams(max_tokens=8))) == results[0]


def test_closed_engine_is_unhealthy(tiny_llm):
    from serving.engines.transformers import TransformersEngine

    engine = TransformersEngine(*tiny_llm)
    assert engine.health()
    engine.close()
    assert not engine.health()
    with pytest.raises(EngineUnavailableError):
        list(engine.generate(torch.zeros(3, engine.hidden_size), SamplingParams(max_tokens=2)))


def test_a_shared_prompt_head_reuses_the_previous_kv_and_keeps_the_reply(tiny_llm):
    from serving.engines.transformers import MIN_REUSED_ROWS, TransformersEngine

    model, tokenizer = tiny_llm
    engine = TransformersEngine(model, tokenizer)  # its own: the reuse depends on the previous prompt
    head = engine.embed_tokens(_chat_ids(tokenizer, "Recommend me a movie like Heat, please, with some action"))
    rows = torch.randn(6, engine.hidden_size, generator=torch.Generator().manual_seed(3))
    tail = engine.embed_tokens(tokenizer("Say something nice.", add_special_tokens=False)["input_ids"])
    params = SamplingParams(max_tokens=12)
    cached, replies = [], []
    for prompt in (torch.cat([head, rows, tail]), torch.cat([head, -rows, tail]), torch.cat([head, rows, tail]),
                   torch.cat([head[: MIN_REUSED_ROWS - 1], rows])):
        stream = engine.generate(prompt, params)
        replies.append("".join(stream))
        cached.append(stream.usage.cached_tokens)
        expected = _hf_greedy(model, prompt, 12)
        assert replies[-1] == tokenizer.decode(expected, skip_special_tokens=True), "reuse never changes a reply"
    assert cached == [0, head.shape[0], head.shape[0], 0]  # the last shares too few rows to reuse them
    assert replies[0] == replies[2] != replies[1]


@pytest.mark.parametrize("precision", ["bfloat16", "int8"])
def test_faster_precisions_approximate_float32_and_leave_the_model_as_it_was(tiny_llm, precision):
    """On an LLM at the usual weight scale: the tiny LLM's peaked attention magnifies rounding errors."""
    from serving.engines.transformers import TransformersEngine
    from tests.tiny_system import usual_scale_llm

    tokenizer = tiny_llm[1]
    model = usual_scale_llm(tokenizer)
    weights = {name: p.clone() for name, p in model.state_dict().items()}
    exact, fast = TransformersEngine(model, tokenizer), TransformersEngine(model, tokenizer, precision=precision)
    prompt = exact.embed_tokens(_chat_ids(tokenizer, "I liked the movie Inception, can you recommend something?"))
    assert torch.equal(fast.embed_tokens(range(20)), exact.embed_tokens(range(20)))
    logits = [engine._forward(inputs_embeds=prompt[None].to(engine._dtype))[0].float() for engine in (exact, fast)]
    assert 0 < (logits[1] - logits[0]).norm() / logits[0].norm() < 0.1
    assert torch.argmax(logits[1]) == torch.argmax(logits[0])
    assert "".join(fast.generate(prompt, SamplingParams(max_tokens=8)))
    assert all(torch.equal(p, weights[name]) for name, p in model.state_dict().items())
    assert all(type(m) is not torch.nn.Linear for m in fast._model.modules()) == (precision == "int8")


def test_int8_is_refused_off_the_cpu(tiny_llm, monkeypatch: pytest.MonkeyPatch):
    from serving.engines import transformers
    from serving.errors import ConfigurationError

    monkeypatch.setattr(transformers, "next", lambda _: torch.zeros(1, device="meta"), raising=False)
    with pytest.raises(ConfigurationError, match="CPU only"):
        transformers.TransformersEngine(*tiny_llm, precision="int8")
