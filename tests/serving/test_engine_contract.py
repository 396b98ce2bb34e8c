"""One contract for every LLM engine: transformers, vLLM in-process, and a vLLM server started here.

The reference is Hugging Face `generate(inputs_embeds=...)` on the tiny random Llama (fp32, greedy); every
engine must reproduce its tokens exactly for the same prompt embeddings, plain and with injected random
"item" rows. The vLLM engines are skipped with a reason where `vllm` is not importable (the main .venv);
`make test-vllm` runs this file inside .venv-vllm, where all three run.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from serving.engines.base import LLMEngine, SamplingParams
from serving.engines.transformers import TransformersEngine
from serving.errors import EngineUnavailableError, InvalidRequestError, PromptTooLongError

HAS_VLLM = importlib.util.find_spec("vllm") is not None
NO_VLLM = f"vllm is not importable in {sys.prefix}; run `make test-vllm` (installs .venv-vllm, see docs/vllm.md)"
needs_vllm = [pytest.mark.vllm, pytest.mark.skipif(not HAS_VLLM, reason=NO_VLLM)]

MAX_MODEL_LEN = 2048  # the tiny Llama's max_position_embeddings: all engines then refuse the same prompts
KV_CACHE_BYTES = 256 * 2**20  # 2 KiB per token for the tiny model: ample, and light on a shared machine
SERVER_START_TIMEOUT_S = 600
REPLY_TOKENS = 24
REPLACEMENT_CHAR = "\ufffd"


@dataclass(frozen=True)
class Reference:
    """A prompt `[T, H]` and HF's greedy reply to it: token ids up to and including the first EOS."""

    prompt: torch.Tensor
    token_ids: list[int]
    text: str
    ended_by_eos: bool


def _chat_ids(tokenizer, text: str) -> list[int]:
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
    return tokenizer(rendered, add_special_tokens=False)["input_ids"]


def _reference(model, tokenizer, prompt: torch.Tensor, n: int = REPLY_TOKENS) -> Reference:
    with torch.inference_mode():
        out = model.generate(
            inputs_embeds=prompt[None],
            attention_mask=torch.ones(1, prompt.shape[0], dtype=torch.long),
            max_new_tokens=n,
            do_sample=False,
        )[0].tolist()
    eos = tokenizer.eos_token_id
    ids = out[: out.index(eos) + 1] if eos in out else out
    return Reference(prompt, ids, tokenizer.decode([t for t in ids if t != eos], skip_special_tokens=True), eos in ids)


def _embed(model, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return model.get_input_embeddings()(torch.tensor(ids)).float()


def _item_rows(n: int, hidden: int, seed: int) -> torch.Tensor:
    """Random "soft token" rows at the scale the tiny model's embeddings have (initializer_range=0.5)."""
    return 0.5 * torch.randn(n, hidden, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="session")
def references(tiny_llm) -> dict[str, Reference]:
    """HF greedy replies to: a chat prompt; the same with 3 injected item rows; with other rows; two prompts
    sharing a 160-row prefix (longer than a KV block) that differ only in their last item rows."""
    model, tokenizer = tiny_llm
    plain = _embed(model, _chat_ids(tokenizer, "I liked the movie Inception, can you recommend something?"))
    hidden = plain.shape[1]
    cut = 5

    def soft(seed: int) -> torch.Tensor:
        return torch.cat([plain[:cut], _item_rows(3, hidden, seed), plain[cut:]])

    long_text = " ".join(["You might like Toy Story, Finding Nemo or Up because they are animated."] * 20)
    prefix = _embed(model, _chat_ids(tokenizer, long_text))[:160]
    assert prefix.shape[0] == 160
    tail = plain[-4:]
    refs = {
        "plain": _reference(model, tokenizer, plain),
        "soft": _reference(model, tokenizer, soft(1)),
        "soft-other": _reference(model, tokenizer, soft(2)),
        "prefix-a": _reference(model, tokenizer, torch.cat([prefix, _item_rows(2, hidden, 3), tail])),
        "prefix-b": _reference(model, tokenizer, torch.cat([prefix, _item_rows(2, hidden, 4), tail])),
    }
    assert len({tuple(r.token_ids) for r in refs.values()}) == len(refs), "references must differ to discriminate"
    assert all(len(set(r.token_ids)) > 3 for r in refs.values()), "the tiny model should produce diverse tokens"
    return refs


@pytest.fixture(scope="session")
def vllm_server(tiny_llm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """vLLM's OpenAI server with `--enable-prompt-embeds` over the tiny Llama, on a free loopback port."""
    from serving.engines.vllm import serve_vllm

    os.environ["HF_HUB_OFFLINE"] = "1"
    args = [
        "--dtype", "float32", "--enforce-eager", "--max-model-len", str(MAX_MODEL_LEN), "--seed", "0",
        "--kv-cache-memory-bytes", str(KV_CACHE_BYTES),
    ]
    log_path = tmp_path_factory.mktemp("vllm-server") / "server.log"
    with serve_vllm(
        tiny_llm_dir, log_path, served_model_name="tiny", args=args, timeout_s=SERVER_START_TIMEOUT_S
    ) as url:
        yield url


@pytest.fixture(
    scope="session",
    params=[
        "transformers",
        pytest.param("vllm", marks=needs_vllm),
        pytest.param("vllm-remote", marks=needs_vllm),
    ],
)
def contract_engine(request: pytest.FixtureRequest, tiny_llm, tiny_llm_dir: Path) -> Iterator[LLMEngine]:
    """Each engine over the same tiny Llama; pytest tears one down before building the next."""
    if request.param == "transformers":
        engine: LLMEngine = TransformersEngine(*tiny_llm)
    elif request.param == "vllm":
        from serving.engines.vllm import VLLMEngine

        os.environ["HF_HUB_OFFLINE"] = "1"
        engine = VLLMEngine(
            *tiny_llm, tiny_llm_dir, max_model_len=MAX_MODEL_LEN,
            engine_args={"dtype": "float32", "kv_cache_memory_bytes": KV_CACHE_BYTES},
        )
    else:
        from serving.engines.vllm import RemoteVLLMEngine

        engine = RemoteVLLMEngine(*tiny_llm, request.getfixturevalue("vllm_server"))
    yield engine
    engine.close()


def _same_reply(got: str, expected: str) -> bool:
    """Equal, except that vLLM drops an unfinished UTF-8 character at the very end of a reply (which a one-shot
    decode shows as U+FFFD); token counts are compared separately and exactly."""
    return got == expected or got == expected.rstrip(REPLACEMENT_CHAR)


def _run(engine: LLMEngine, prompt: torch.Tensor, params: SamplingParams) -> tuple[list[str], int, str | None]:
    """(deltas, completion tokens, finish reason) of one generation; checks the prompt token count."""
    stream = engine.generate(prompt, params)
    deltas = list(stream)
    assert stream.usage.prompt_tokens == prompt.shape[0]
    return deltas, stream.usage.completion_tokens, stream.finish_reason


@pytest.mark.parametrize("name", ["plain", "soft", "soft-other"])
def test_greedy_reply_equals_hf_generate(contract_engine, references, name):
    ref = references[name]
    deltas, completion_tokens, finish = _run(contract_engine, ref.prompt, SamplingParams(max_tokens=REPLY_TOKENS))
    assert _same_reply("".join(deltas), ref.text)
    assert completion_tokens == len(ref.token_ids)
    assert finish == ("stop" if ref.ended_by_eos else "length")


def test_item_rows_change_the_reply(contract_engine, references):
    params = SamplingParams(max_tokens=REPLY_TOKENS)
    replies = {"".join(_run(contract_engine, references[n].prompt, params)[0]) for n in ("plain", "soft", "soft-other")}
    assert len(replies) == 3


def test_shared_prefix_prompts_keep_their_own_replies(contract_engine, references):
    """Prompts of text rows and item rows that share a 160-row prefix and differ in later item rows.

    vLLM's prefix caching is on (its default): the 2nd and 3rd prompts reuse cached prefix blocks, yet every
    reply equals HF's, which has no cache. The transformers engine reuses the previous prompt's KV for
    exactly the rows they share. (vllm#56655 is about prompts mixing token ids and embeddings
    under a `prompt_is_token_ids` mask; ilmrec embeds the text itself and sends embeddings only.)
    """
    params = SamplingParams(max_tokens=REPLY_TOKENS)
    cached = []
    for name in ("prefix-a", "prefix-b", "prefix-a"):
        stream = contract_engine.generate(references[name].prompt, params)
        assert _same_reply("".join(stream), references[name].text)
        cached.append(stream.usage.cached_tokens)
    if isinstance(contract_engine, TransformersEngine):  # reuses the rows shared with the previous prompt
        assert cached[1:] == [160, 160]
    else:
        assert cached[0] == 0
        assert 0 < cached[1] <= 160
        assert cached[2] >= cached[1]


def test_max_tokens_ends_with_length(contract_engine, references, tiny_llm):
    _, tokenizer = tiny_llm
    ref = references["plain"]
    n = 5
    assert tokenizer.eos_token_id not in ref.token_ids[:n]
    deltas, completion_tokens, finish = _run(contract_engine, ref.prompt, SamplingParams(max_tokens=n))
    assert _same_reply("".join(deltas), tokenizer.decode(ref.token_ids[:n], skip_special_tokens=True))
    assert completion_tokens == n
    assert finish == "length"


def test_stop_string_ends_the_reply_before_it(contract_engine, references, tiny_llm):
    _, tokenizer = tiny_llm
    ref = references["soft"]
    stop = ref.text[4:7]
    assert len(stop) == 3
    deltas, completion_tokens, finish = _run(
        contract_engine, ref.prompt, SamplingParams(max_tokens=REPLY_TOKENS, stop=(stop,))
    )
    assert "".join(deltas) == ref.text[: ref.text.find(stop)]
    assert finish == "stop"
    # decoding stops at the token that completes the stop string
    prefixes = (tokenizer.decode(ref.token_ids[:n], skip_special_tokens=True) for n in range(len(ref.token_ids) + 1))
    needed = next(n for n, text in enumerate(prefixes) if stop in text)
    assert completion_tokens == needed


def test_reply_streams_in_several_deltas(contract_engine, references):
    deltas, _, _ = _run(contract_engine, references["plain"].prompt, SamplingParams(max_tokens=REPLY_TOKENS))
    assert len(deltas) > 1
    assert all(deltas)


def test_seeded_sampling_is_reproducible(contract_engine, references):
    prompt = references["soft"].prompt
    params = SamplingParams(max_tokens=12, temperature=1.0, top_p=0.9, seed=7)
    first = "".join(_run(contract_engine, prompt, params)[0])
    assert first == "".join(_run(contract_engine, prompt, params)[0])
    others = {"".join(_run(contract_engine, prompt, params.model_copy(update={"seed": s}))[0]) for s in range(6)}
    assert len(others) > 1


def test_concurrent_generations_match_sequential_ones(contract_engine, references):
    params = SamplingParams(max_tokens=REPLY_TOKENS)
    names = ["plain", "soft", "soft-other", "plain"]
    results: dict[int, str] = {}

    def generate(i: int) -> None:
        results[i] = "".join(contract_engine.generate(references[names[i]].prompt, params))

    threads = [threading.Thread(target=generate, args=(i,)) for i in range(len(names))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(_same_reply(results[i], references[n].text) for i, n in enumerate(names))


def test_a_stream_closed_early_frees_the_engine(contract_engine, references):
    ref = references["plain"]
    stream = contract_engine.generate(ref.prompt, SamplingParams(max_tokens=REPLY_TOKENS))
    assert next(stream)
    stream.close()
    assert _same_reply("".join(contract_engine.generate(ref.prompt, SamplingParams(max_tokens=REPLY_TOKENS))), ref.text)
    assert contract_engine.health()


def test_embed_tokens_is_the_models_embedding_table(contract_engine, tiny_llm):
    model, tokenizer = tiny_llm
    ids = _chat_ids(tokenizer, "Hello!")
    assert contract_engine.hidden_size == model.config.hidden_size
    assert contract_engine.tokenizer.eos_token_id == tokenizer.eos_token_id
    assert torch.equal(contract_engine.embed_tokens(ids), _embed(model, ids))


def test_bad_prompts_are_refused_with_a_reason(contract_engine):
    hidden = contract_engine.hidden_size
    with pytest.raises(InvalidRequestError, match=rf"\[T>0, {hidden}\]"):
        contract_engine.generate(torch.zeros(4, hidden + 1), SamplingParams())
    with pytest.raises(InvalidRequestError, match=r"\[T>0"):
        contract_engine.generate(torch.zeros(0, hidden), SamplingParams())
    with pytest.raises(InvalidRequestError, match="floating point"):
        contract_engine.generate(torch.zeros(4, hidden, dtype=torch.long), SamplingParams())
    with pytest.raises(PromptTooLongError, match="max_tokens"):
        contract_engine.generate(torch.zeros(MAX_MODEL_LEN - 10, hidden), SamplingParams(max_tokens=20))


@pytest.mark.parametrize("_", [pytest.param(None, marks=needs_vllm)])
def test_remote_engine_closes_its_connection(_, tiny_llm, vllm_server):
    from serving.engines.vllm import RemoteVLLMEngine

    engine = RemoteVLLMEngine(*tiny_llm, vllm_server)
    assert engine.model_name == "tiny"
    assert engine.health()
    engine.close()
    assert not engine.health()
    with pytest.raises(EngineUnavailableError, match="closed"):
        engine.generate(torch.zeros(3, engine.hidden_size), SamplingParams(max_tokens=2))
