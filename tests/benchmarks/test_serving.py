"""The serving load benchmark: options, summary statistics, targets, the written report, and one real level
of concurrent streamed sessions against the API over the tiny LLM."""

from __future__ import annotations

import asyncio
import json

import pytest

from benchmarks.serving import (
    MODEL_NAME,
    Options,
    Report,
    Turn,
    parse_args,
    run_level,
    summarise,
    targets,
    user_turns,
    write_results,
)
from serving.api.server import build_app
from tests.serving.conftest import (  # noqa: F401  (fixtures of the serving tests, reused here)
    catalogue,
    engine,
    movielens,
    recommender,
    service,
    soft_table,
    tiny_llm,
)
from tests.serving.live import serve


def test_options(tmp_path):
    options = parse_args(["--engines", "transformers, vllm", "--sessions", "1,8", "--turns", "2",
                          "--out", str(tmp_path), "--data-path", str(tmp_path)])
    assert (options.engines, options.sessions, options.turns, options.max_tokens) == (
        ["transformers", "vllm"], [1, 8], 2, 48)
    with pytest.raises(ValueError, match="engines"):
        parse_args(["--engines", "llama.cpp"])
    with pytest.raises(ValueError, match="turns"):
        parse_args(["--turns", "9"])


def test_sessions_differ_and_continue():
    assert user_turns(0, 3) == ["I loved Toy Story and Finding Nemo", "something darker, not animated",
                                "from the nineties please"]
    assert len({user_turns(s, 1)[0] for s in range(16)}) == 16


def test_summary_statistics():
    turns = [Turn(ttft_s=0.05, llm_s=0.1, last_s=1.1, prompt_tokens=300, completion_tokens=11),
             Turn(ttft_s=0.1, llm_s=0.3, last_s=2.3, prompt_tokens=320, completion_tokens=21),
             Turn(ttft_s=0.1, llm_s=0.2, last_s=0.2, prompt_tokens=310, completion_tokens=1),
             Turn(error="APIConnectionError: refused")]
    level = summarise("vllm", 4, 2.0, turns, (1.5, 2.5))
    assert (level.turns, level.errors, level.first_error) == (4, 1, "APIConnectionError: refused")
    assert (level.ttft_ms_p50, level.ttft_ms_p95) == pytest.approx((100.0, 100.0))
    assert level.llm_ms_p50 == pytest.approx(200.0)
    assert level.llm_ms_p95 == pytest.approx(290.0)  # 200 + 0.9 * (300 - 200)
    assert level.ms_per_token_p50 == pytest.approx(100.0)  # both multi-token turns: 100 ms per token from the LLM's
    assert level.tokens_per_s == pytest.approx(33 / 2.0)
    assert level.mean_completion_tokens == pytest.approx(11.0)
    assert level.mean_prompt_tokens == pytest.approx(310.0)


def _level(engine: str, sessions: int, tokens_per_s: float, ttft_ms: float, errors: int = 0):
    turns = [Turn(ttft_s=ttft_ms / 1000, llm_s=ttft_ms / 1000 + 0.5, last_s=1.0, prompt_tokens=200,
                  completion_tokens=int(tokens_per_s))] + [
        Turn(error="TimeoutError")] * errors
    return summarise(engine, sessions, 1.0, turns, (1.0, 2.0))


def test_targets_are_judged():
    levels = [_level("transformers", 1, 10, 250), _level("transformers", 8, 20, 900),
              _level("transformers", 16, 20, 900, errors=2), _level("vllm", 1, 12, 350), _level("vllm", 8, 30, 500),
              _level("vllm", 16, 30, 800)]
    assert targets(levels) == [
        ("16 concurrent sessions, 0 errors", "transformers: 2 errors (missed), vllm: 0 errors (met)"),
        ("p50 TTFT <= 300 ms at 1 session", "transformers: 250 ms (met; the LLM's first words at 750 ms), "
                                            "vllm: 350 ms (missed; the LLM's first words at 850 ms)"),
        ("vLLM >= 1.3x transformers tokens/s at 8 sessions", "vllm: 1.50x (met)"),
    ]
    assert targets([]) == [("16 concurrent sessions, 0 errors", "not measured"),
                           ("p50 TTFT <= 300 ms at 1 session", "not measured"),
                           ("vLLM >= 1.3x transformers tokens/s at 8 sessions", "not measured")]


def test_report_files(tmp_path):
    options = parse_args(["--engines", "transformers", "--out", str(tmp_path)])
    levels = [_level("transformers", 1, 10, 250), _level("transformers", 16, 20, 900, errors=1)]
    report = Report(command="python -m benchmarks.serving --engines transformers", environment={"nice": "10"},
                    options=options, levels=levels)
    json_path, md_path = write_results(report, tmp_path / "results")
    data = json.loads(json_path.read_text())
    assert data["levels"][1]["errors"] == 1 and Options.model_validate(data["options"]) == options
    md = md_path.read_text()
    assert "`python -m benchmarks.serving --engines transformers`" in md and "- nice: 10" in md
    assert "**The machine is shared**" in md and "ranged 1.0-2.0" in md  # 250 ms / 9 tokens below
    assert "| transformers | 1 | 1 | 0 | 250 | 250 | 750 | 750 | n/a | 27.8 | 27.8 | 10.0 | 10.0 | 200 | 0 | 1.0 | 1.0-2.0 |" in md
    assert "- transformers x 16: TimeoutError" in md


def test_a_level_of_concurrent_sessions_through_the_api(service):
    with serve(build_app(service, MODEL_NAME)) as url:
        wall, turns = asyncio.run(run_level(url, sessions=3, turns=2, max_tokens=4))
    assert len(turns) == 6 and all(t.error is None for t in turns)
    assert all(0 < t.ttft_s < t.llm_s <= t.last_s <= wall and 1 <= t.completion_tokens <= 4 < t.prompt_tokens
               for t in turns), "the opening clause, then the LLM's words"
    assert all(0 < t.picks_s <= t.ttft_s for t in turns), "the picks arrive before the sentence"
    sessions = {t.session_id for t in turns}
    assert len(sessions) == 3 and all(service.store.load(s).state.turn == 2 for s in sessions)
