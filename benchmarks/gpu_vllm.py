"""GPU vLLM benchmark: time to first token and tokens/s for prompts given as embeddings (text + item rows).

    python -m benchmarks.gpu_vllm [--models ID_OR_PATH,...] [--modes inprocess,server] [--concurrency 1,8]
        [--prompt-tokens 256] [--soft-tokens 8] [--max-tokens 128] [--repeats 3] [--out benchmarks/results]

For a CUDA machine with upstream vLLM installed beside ilmrec (docs/vllm.md pins the version) and the models
already on disk or in the Hugging Face cache (nothing is downloaded: HF_HUB_OFFLINE=1). Each model is run
through ilmrec's own engines: `VLLMEngine` (in-process) and `RemoteVLLMEngine` against a `vllm` OpenAI server
started here on a free loopback port. Writes `gpu_vllm.json` (every figure) and `gpu_vllm.md` (the table,
headed by the command) into `--out`.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_MODELS = ("HuggingFaceTB/SmolLM2-135M-Instruct", "Qwen/Qwen2.5-1.5B-Instruct")
USER_TEXT = "I loved Inception and Memento. Recommend three films like them and say why in one sentence each."
CATALOGUE_LINE = "Candidate: a film with a twisty plot, strong direction and a memorable score."

Mode = Literal["inprocess", "server"]


class Options(BaseModel):
    """What to measure."""

    models: list[str] = Field(min_length=1, description="Hugging Face ids or local folders.")
    modes: list[Mode] = Field(min_length=1)
    concurrency: list[int] = Field(min_length=1, description="Simultaneous requests per measurement.")
    prompt_tokens: int = Field(ge=16, description="Approximate prompt length in rows (text + soft rows).")
    soft_tokens: int = Field(ge=0, description="Random item rows spliced into each prompt.")
    max_tokens: int = Field(ge=2, description="Reply cap (greedy; a reply may end earlier at EOS).")
    repeats: int = Field(ge=1, description="Runs per concurrency level (after one warm-up request).")
    gpu_memory_utilization: float = Field(gt=0, le=1)
    max_model_len: int = Field(ge=64)
    cache_dir: Path
    out: Path


class Sample(BaseModel):
    """One request: seconds to the first text delta and to the end, tokens generated, or the error."""

    ttft_s: float = 0.0
    total_s: float = 0.0
    completion_tokens: int = 0
    error: str | None = None


class Measurement(BaseModel):
    """One model x mode x concurrency level, over all repeats."""

    model: str
    mode: Mode
    concurrency: int
    requests: int
    errors: int
    ttft_ms_p50: float | None
    ttft_ms_p95: float | None
    decode_ms_per_token_p50: float | None
    tokens_per_s: float | None = Field(description="Aggregate: generated tokens / wall time, mean over repeats.")
    mean_completion_tokens: float | None


class Report(BaseModel):
    command: str
    environment: dict[str, str]
    options: Options
    measurements: list[Measurement]


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated ids or folders")
    parser.add_argument("--modes", default="inprocess,server", help="inprocess and/or server")
    parser.add_argument("--concurrency", default="1,8", help="comma-separated request counts")
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--soft-tokens", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/ilmrec").expanduser(),
                        help="ilmrec cache (only used for the `bundled` model)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    return Options(
        models=_split(args.models),
        modes=_split(args.modes),
        concurrency=[int(c) for c in _split(args.concurrency)],
        prompt_tokens=args.prompt_tokens,
        soft_tokens=args.soft_tokens,
        max_tokens=args.max_tokens,
        repeats=args.repeats,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_model_len=args.max_model_len,
        cache_dir=args.cache_dir,
        out=args.out,
    )


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) with linear interpolation between order statistics."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarise(model: str, mode: Mode, concurrency: int, runs: Sequence[tuple[float, Sequence[Sample]]]) -> Measurement:
    """Percentiles over every request of `runs` ((wall seconds, samples) per repeat); rates in tokens/s."""
    samples = [s for _, run in runs for s in run]
    ok = [s for s in samples if s.error is None and s.completion_tokens > 0]
    decode = [1000 * (s.total_s - s.ttft_s) / (s.completion_tokens - 1) for s in ok if s.completion_tokens > 1]
    rates = [sum(s.completion_tokens for s in run if s.error is None) / wall for wall, run in runs if wall > 0]
    ttft = [1000 * s.ttft_s for s in ok]
    return Measurement(
        model=model,
        mode=mode,
        concurrency=concurrency,
        requests=len(samples),
        errors=len(samples) - len(ok),
        ttft_ms_p50=percentile(ttft, 0.5) if ttft else None,
        ttft_ms_p95=percentile(ttft, 0.95) if ttft else None,
        decode_ms_per_token_p50=percentile(decode, 0.5) if decode else None,
        tokens_per_s=statistics.fmean(rates) if rates else None,
        mean_completion_tokens=statistics.fmean(s.completion_tokens for s in ok) if ok else None,
    )


def write_results(report: Report, out: Path) -> tuple[Path, Path]:
    """`out/gpu_vllm.json` (the report) and `out/gpu_vllm.md` (command, environment, one table row each)."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "gpu_vllm.json", out / "gpu_vllm.md"
    json_path.write_text(report.model_dump_json(indent=2) + "\n")

    def cell(value: float | None, digits: int = 1) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    lines = [
        "# vLLM on GPU with prompt embeddings",
        "",
        f"Command: `{report.command}`",
        "",
        *(f"- {key}: {value}" for key, value in report.environment.items()),
        "",
        f"Prompts: about {report.options.prompt_tokens} rows, {report.options.soft_tokens} of them random item "
        f"rows; greedy, at most {report.options.max_tokens} new tokens; {report.options.repeats} repeats.",
        "",
        "| model | mode | concurrent | requests | errors | TTFT p50 ms | TTFT p95 ms | decode ms/token p50 "
        "| tokens/s (aggregate) | mean new tokens |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {m.model} | {m.mode} | {m.concurrency} | {m.requests} | {m.errors} | {cell(m.ttft_ms_p50)} "
        f"| {cell(m.ttft_ms_p95)} | {cell(m.decode_ms_per_token_p50, 2)} | {cell(m.tokens_per_s)} "
        f"| {cell(m.mean_completion_tokens)} |"
        for m in report.measurements
    ]
    md_path.write_text("\n".join(lines) + "\n")
    return json_path, md_path


def _environment() -> dict[str, str]:
    import torch
    import transformers
    import vllm

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "gpu": gpu,
        "vllm": vllm.__version__,
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def _prompts(engine: Any, count: int, options: Options) -> list[Any]:
    """`count` prompts `[T, H]`: a shared chat-template text prefix, then distinct random item rows."""
    import torch

    tokenizer = engine.tokenizer
    lines = [CATALOGUE_LINE]
    while True:
        messages = [{"role": "system", "content": "\n".join(lines)}, {"role": "user", "content": USER_TEXT}]
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
        if len(ids) + options.soft_tokens >= options.prompt_tokens or len(lines) > 10_000:
            break
        lines.append(CATALOGUE_LINE)
    text = engine.embed_tokens(ids)
    scale = float(text.std())
    cut = max(len(ids) - 8, 0)  # the item rows go just before the generation prompt
    return [
        torch.cat([
            text[:cut],
            scale * torch.randn(options.soft_tokens, text.shape[1], generator=torch.Generator().manual_seed(i)),
            text[cut:],
        ])
        for i in range(count)
    ]


def _one(engine: Any, prompt: Any, max_tokens: int) -> Sample:
    from serving.engines.base import SamplingParams

    started = time.perf_counter()
    first = None
    try:
        stream = engine.generate(prompt, SamplingParams(max_tokens=max_tokens))
        for _ in stream:
            if first is None:
                first = time.perf_counter() - started
        total = time.perf_counter() - started
        return Sample(ttft_s=first or total, total_s=total, completion_tokens=stream.usage.completion_tokens)
    except Exception as exc:  # counted as an error in the report, the run goes on
        return Sample(error=f"{type(exc).__name__}: {exc}")


def _concurrent(engine: Any, prompts: Sequence[Any], max_tokens: int) -> tuple[float, list[Sample]]:
    """All `prompts` at once, one thread each; (wall seconds, samples)."""
    samples: list[Sample] = [Sample()] * len(prompts)

    def run(i: int) -> None:
        samples[i] = _one(engine, prompts[i], max_tokens)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, samples


@contextmanager
def _engine(mode: Mode, model: Any, tokenizer: Any, path: str, options: Options, logs: Path) -> Iterator[Any]:
    from serving.engines.vllm import RemoteVLLMEngine, VLLMEngine, serve_vllm

    if mode == "inprocess":
        engine = VLLMEngine(
            model, tokenizer, path, max_model_len=options.max_model_len,
            engine_args={"gpu_memory_utilization": options.gpu_memory_utilization},
        )
        try:
            yield engine
        finally:
            engine.close()
        return
    args = ["--max-model-len", str(options.max_model_len), "--seed", "0",
            "--gpu-memory-utilization", str(options.gpu_memory_utilization)]
    with serve_vllm(path, logs / f"server-{Path(path).name}.log", served_model_name=Path(path).name, args=args) as url:
        engine = RemoteVLLMEngine(model, tokenizer, url)
        try:
            yield engine
        finally:
            engine.close()


def run(options: Options) -> list[Measurement]:
    from ilm_model.llm_loading import BUNDLED, convert_bundled, load_frozen_llm

    measurements: list[Measurement] = []
    logs = Path(tempfile.mkdtemp(prefix="gpu-vllm-"))
    for spec in options.models:
        model, tokenizer = load_frozen_llm(spec, options.cache_dir)
        path = str(convert_bundled(options.cache_dir)) if spec == BUNDLED else spec
        for mode in options.modes:
            with _engine(mode, model, tokenizer, path, options, logs) as engine:
                prompts = _prompts(engine, max(options.concurrency), options)
                _one(engine, prompts[0], options.max_tokens)  # warm-up
                for concurrency in options.concurrency:
                    runs = [_concurrent(engine, prompts[:concurrency], options.max_tokens)
                            for _ in range(options.repeats)]
                    measurement = summarise(spec, mode, concurrency, runs)
                    print(measurement.model_dump_json(), flush=True)
                    measurements.append(measurement)
    return measurements


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import vllm  # noqa: F401
    except ImportError:
        print("this benchmark needs upstream vllm on a CUDA machine: see docs/vllm.md", file=sys.stderr)
        return 2
    environment = _environment()
    command = "python -m benchmarks.gpu_vllm " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    report = Report(command=command.strip(), environment=environment, options=options, measurements=run(options))
    for path in write_results(report, options.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
