"""The soak benchmark: options, its statistics on hand-made samples, the written report, and a real
few-second drive of the API in its own process."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from benchmarks.soak import (
    Options,
    Report,
    RssSample,
    TurnResult,
    drive,
    parse_args,
    rss_mib,
    slope,
    api_command,
    start_api,
    summarise,
    write_results,
)
from tests.serving.conftest import (  # noqa: F401  (fixtures of the serving tests, reused here)
    catalogue,
    engine,
    free_port,
    movielens,
    recommender,
    saved_system,
    soft_table,
    tiny_llm,
)


def test_options():
    options = parse_args(["--minutes", "5", "--warmup-minutes", "0.5", "--rate", "3", "--sessions", "4"])
    assert (options.minutes, options.warmup_minutes, options.rate, options.sessions) == (5.0, 0.5, 3.0, 4)
    assert parse_args([]).minutes == 10.0
    with pytest.raises(ValueError, match="warmup"):
        Options(minutes=1, warmup_minutes=1)


def test_slope_is_least_squares():
    assert slope([(0, 1), (1, 3), (2, 5)]) == pytest.approx(2.0)
    assert slope([(0, 0), (1, 1), (2, 0), (3, 1)]) == pytest.approx(0.2)
    assert slope([(1, 5)]) is None


def test_summary_leaves_out_the_warm_up():
    turns = [TurnResult(at_s=t, latency_s=lat, stream=False, error=err) for t, lat, err in
             [(0, 9.0, None), (5, 1.0, "HTTP 503"), (10, 0.1, None), (20, 0.2, None), (30, 0.3, None)]]
    rss = [RssSample(at_s=t, rss_mib=m) for t, m in [(0, 50), (6, 100), (20, 105), (40, 110)]]
    s = summarise(turns, rss, skipped=2, warmup_s=10, duration_s=40)
    assert (s.turns, s.errors, s.skipped) == (5, 1, 2)
    assert s.achieved_rate == pytest.approx(3 / 30)
    assert (s.p50_ms, s.max_ms) == (pytest.approx(200), pytest.approx(300))
    assert (s.rss_warm_mib, s.rss_end_mib, s.rss_max_mib) == (100, 110, 110)
    assert s.growth == pytest.approx(0.10)
    assert s.slope_mib_per_min == pytest.approx(15.0)  # 105 -> 110 MiB over 20 s


def test_a_short_drive_of_the_api_process(saved_system, tmp_path):
    options = Options(minutes=0.15, warmup_minutes=0.05, rate=4, sessions=3, turns_per_session=3, sample_s=1,
                      out=tmp_path)
    port = free_port()
    command = [sys.executable, "-m", "tests.serving.api_process", str(saved_system), str(port)]
    process = start_api(command, port, tmp_path / "api.log")
    try:
        turns, rss, skipped = asyncio.run(drive(f"http://127.0.0.1:{port}", process.pid, options))
    finally:
        process.terminate()
        process.wait(30)
    assert [t.error for t in turns] == [None] * len(turns) and len(turns) + skipped == 36
    assert {t.stream for t in turns} == {True, False} and len(rss) >= 5 and all(s.rss_mib > 50 for s in rss)
    summary = summarise(turns, rss, skipped, 3, 9)
    report = Report(options=options, command="python -m benchmarks.soak", machine="test", niceness=0,
                    load_before=(0, 0, 0), load_after=(0, 0, 0), summary=summary, errors_seen={}, rss=rss,
                    turns=turns)
    json_path, md_path = write_results(report, tmp_path)
    assert (json_path.name, md_path.name) == ("soak.json", "soak.md")
    assert json.loads(json_path.read_text())["summary"]["errors"] == 0
    product = report.model_copy(update={"options": options.model_copy(update={"system": "product"})})
    assert [p.name for p in write_results(product, tmp_path)] == ["soak_product.json", "soak_product.md"]
    assert "| turns | errors |" in md_path.read_text() and "python -m benchmarks.soak" in md_path.read_text()


def test_the_product_is_served_by_the_serving_benchmarks_api_child_over_a_run_folder(tmp_path):
    from benchmarks import serving

    command = api_command(Options(system="product", data_path="/data/ml", artefacts="/runs/a"), tmp_path, 8123)
    assert command[1:7] == ["-m", "benchmarks.serving", "--serve", "transformers", "--port", "8123"]
    child = serving.Options.model_validate_json(command[command.index("--options") + 1])
    assert (child.artefacts, child.data_path, child.untrained_ilm) == (Path("/runs/a"), Path("/data/ml"), False)
    assert serving.Options.model_validate_json(api_command(Options(system="product"), tmp_path, 1)[-1]).artefacts is None
    tiny = api_command(Options(), tmp_path, 8123)
    assert tiny[1:3] == ["-m", "tests.serving.api_process"] and Path(tiny[3]).is_dir()


def test_rss_of_this_process():
    import os

    assert rss_mib(os.getpid()) > 10
