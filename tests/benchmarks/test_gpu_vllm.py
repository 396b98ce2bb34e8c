"""The GPU vLLM benchmark's CPU-only parts: option parsing, summary statistics and the written report."""

from __future__ import annotations

import json

import pytest

from benchmarks.gpu_vllm import DEFAULT_MODELS, Options, Report, Sample, parse_args, summarise, write_results


def test_defaults_cover_both_models_and_modes(tmp_path):
    options = parse_args(["--out", str(tmp_path), "--concurrency", "1, 4"])
    assert options.models == list(DEFAULT_MODELS)
    assert options.modes == ["inprocess", "server"]
    assert options.concurrency == [1, 4]
    assert options.out == tmp_path


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="modes"):
        parse_args(["--modes", "inprocess,ollama"])


def test_summary_statistics():
    runs = [
        (2.0, [Sample(ttft_s=0.1, total_s=1.1, completion_tokens=11),
               Sample(ttft_s=0.3, total_s=2.0, completion_tokens=18)]),
        (1.0, [Sample(ttft_s=0.2, total_s=0.8, completion_tokens=7), Sample(error="InvalidRequestError: no")]),
    ]
    m = summarise("tiny", "server", 2, runs)
    assert (m.requests, m.errors) == (4, 1)
    assert m.ttft_ms_p50 == pytest.approx(200.0)
    assert m.ttft_ms_p95 == pytest.approx(290.0)  # 200 + 0.9 * (300 - 200)
    assert m.decode_ms_per_token_p50 == pytest.approx(100.0)  # 100, 100, 100 ms per token after the first
    assert m.tokens_per_s == pytest.approx((29 / 2.0 + 7 / 1.0) / 2)
    assert m.mean_completion_tokens == pytest.approx(12.0)


def test_report_files(tmp_path):
    options = parse_args(["--out", str(tmp_path), "--models", "a,b"])
    measurement = summarise("a", "inprocess", 1, [(1.0, [Sample(ttft_s=0.05, total_s=0.5, completion_tokens=10)])])
    empty = summarise("b", "server", 1, [(1.0, [Sample(error="EngineUnavailableError: down")])])
    report = Report(command="python -m benchmarks.gpu_vllm --models a,b", environment={"gpu": "H200"},
                    options=options, measurements=[measurement, empty])
    json_path, md_path = write_results(report, tmp_path / "results")
    data = json.loads(json_path.read_text())
    assert data["measurements"][0]["tokens_per_s"] == pytest.approx(10.0)
    assert Options.model_validate(data["options"]) == options
    md = md_path.read_text()
    assert "`python -m benchmarks.gpu_vllm --models a,b`" in md and "- gpu: H200" in md
    assert "| a | inprocess | 1 | 1 | 0 | 50.0 | 50.0 | 50.00 | 10.0 | 10.0 |" in md
    assert "| b | server | 1 | 1 | 1 | n/a | n/a | n/a | 0.0 | n/a |" in md
