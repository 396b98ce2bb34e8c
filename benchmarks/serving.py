"""Load benchmark of the chat API: N concurrent sessions x M turns, streamed, for each LLM engine.

    python -m benchmarks.serving [--engines transformers,vllm,vllm-remote] [--sessions 1,8,16] [--turns 3]
        [--max-tokens 48] [--data-path DIR] [--config FILE] [--artefacts RUN_FOLDER] [--untrained-ilm]
        [--note TEXT] [--out benchmarks/results]

For each engine it starts the real API (`serving.api.server.build_app` over the trained artefacts under
`~/.cache/ilmrec/artifacts/`, never training them) in a child process on a free loopback port; for
`vllm-remote` first a vLLM OpenAI server with `--enable-prompt-embeds` (both with 1 GiB of KV cache and
vLLM's OpenMP threads on both cores). After one warm-up turn, per level N, N sessions talk at
once through the official `openai` async client, each turn streamed and continuing its session by
`session_id`. Per turn it records the time to the first text delta (TTFT, the first text a chat client
prints: the reply's opening clause, written by the dialogue manager, `serving.reply_opening`), the time to the
second (`LLM words`: the LLM's continuation of that clause, shown once it cannot be a fragment, or the fixed
continuation when the LLM's was dropped), the time to the first chunk carrying the structured
recommendations (`picks`, sent before the LLM starts), the time to the last delta and the LLM's completion
and prompt tokens, cached ones included (`usage`, `stream_options.include_usage`). The vLLM engines need `vllm` (run it from
.venv-vllm, `make vllm`); by default every engine importable here runs. Writes `serving.json` (every figure)
and `serving.md` (the table, the targets, the load average) into `--out`.

Per-token latency = (last delta - LLM words) / (completion tokens - 1): the last delta is the grounded list,
sent right after the LLM's final token. Aggregate tokens/s = LLM completion tokens of all turns / wall time
of the level.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from benchmarks.gpu_vllm import percentile
from serving.processes import stop_process

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHARED_MOVIELENS = ROOT.parent / "shared" / "data" / "ml-latest-small"
MODEL_NAME = "ilmrec-bench"
START_TIMEOUT_S = 900
TURN_TIMEOUT_S = 900
VLLM_KV_CACHE_GIB = 1
"""KV cache of the vLLM engines: ~23k tokens of SmolLM2-135M in fp32, ample for 16 sessions."""

Engine = Literal["transformers", "vllm", "vllm-remote"]
ENGINES: tuple[Engine, ...] = ("transformers", "vllm", "vllm-remote")

LIKED = [
    ("Toy Story", "Finding Nemo"), ("Heat", "Goodfellas"), ("Memento", "Inception"), ("The Matrix", "Alien"),
    ("Pulp Fiction", "Fargo"), ("Forrest Gump", "Titanic"), ("Jurassic Park", "Star Wars"), ("Fight Club", "Se7en"),
    ("Up", "Shrek"), ("Casablanca", "Vertigo"), ("Gladiator", "Braveheart"), ("Amelie", "Big Fish"),
    ("The Lion King", "Aladdin"), ("Die Hard", "Speed"), ("Groundhog Day", "Clueless"), ("Blade Runner", "Brazil"),
]
FOLLOW_UPS = ["something darker, not animated", "from the nineties please", "more like the first one",
              "a comedy this time"]


class Options(BaseModel):
    """What to measure."""

    engines: list[Engine] = Field(min_length=1)
    sessions: list[int] = Field(min_length=1, description="Concurrent sessions per level.")
    turns: int = Field(ge=1, le=len(FOLLOW_UPS) + 1, description="Turns per session.")
    max_tokens: int = Field(ge=1, le=256, description="The client's max_tokens per turn (greedy).")
    data_path: Path | None = Field(description="MovieLens folder the artefacts were trained on.")
    config: Path | None = Field(description="ilmrec settings YAML, as for `ilmrec run --config`.")
    artefacts: Path | None = Field(description="A finished run folder; default: the one the settings name.")
    note: str | None = Field(description="A line for the report, e.g. what the artefacts are.")
    untrained_ilm: bool = Field(description="Serve the trained retrieval stage with an untrained ILM (timing only).")
    out: Path


class Turn(BaseModel):
    """One streamed turn: its session, seconds to the first and the last text delta, LLM tokens, or the error."""

    session_id: str | None = None
    ttft_s: float = 0.0
    picks_s: float | None = Field(None, description="Seconds to the first chunk with `recommendations`.")
    llm_s: float = Field(0.0, description="Seconds to the second text delta: the LLM's first words shown.")
    last_s: float = 0.0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


class Level(BaseModel):
    """One engine at one number of concurrent sessions."""

    engine: Engine
    sessions: int
    turns: int = Field(description="Turns requested in all (sessions x turns per session).")
    errors: int
    ttft_ms_p50: float | None
    ttft_ms_p95: float | None
    picks_ms_p50: float | None = Field(None, description="Median time to the first chunk with the picks.")
    llm_ms_p50: float | None = Field(None, description="Median time to the LLM's first words (`Turn.llm_s`).")
    llm_ms_p95: float | None = None
    ms_per_token_p50: float | None
    ms_per_token_p95: float | None
    tokens_per_s: float | None = Field(description="LLM completion tokens of all turns / wall time.")
    mean_completion_tokens: float | None
    mean_prompt_tokens: float | None = Field(description="Prompt rows (text + soft tokens) the LLM read per turn.")
    mean_cached_tokens: float | None = Field(None, description="Of those, rows whose KV the engine reused.")
    wall_s: float
    load_average: tuple[float, float] = Field(description="1-minute load average at the start and the end.")
    first_error: str | None = None


class Report(BaseModel):
    command: str
    environment: dict[str, str]
    options: Options
    levels: list[Level]


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default=",".join(available_engines()), help="comma-separated engines")
    parser.add_argument("--sessions", default="1,8,16", help="comma-separated concurrent-session counts")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--data-path", type=Path, default=SHARED_MOVIELENS if SHARED_MOVIELENS.is_dir() else None)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--artefacts", type=Path, default=None,
                        help="a finished <cache>/artifacts/<dataset>-<fingerprint>/ folder to serve")
    parser.add_argument("--note", help="a line for the report (e.g. what the artefacts are)")
    parser.add_argument("--untrained-ilm", action="store_true",
                        help="when the ILM stage is not trained yet: serve the trained retrieval stage with an "
                        "untrained ILM (random soft tokens of the trained shape); the serving cost is the same")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    return Options(
        engines=_split(args.engines),
        sessions=[int(n) for n in _split(args.sessions)],
        turns=args.turns,
        max_tokens=args.max_tokens,
        data_path=args.data_path,
        config=args.config,
        artefacts=args.artefacts,
        note=args.note,
        untrained_ilm=args.untrained_ilm,
        out=args.out,
    )


def available_engines() -> list[Engine]:
    """Every engine, or only transformers where `vllm` is not importable."""
    return list(ENGINES) if importlib.util.find_spec("vllm") is not None else ["transformers"]


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def user_turns(session: int, turns: int) -> list[str]:
    """What session `session` says: two movies it loved, then follow-ups."""
    first, second = LIKED[session % len(LIKED)]
    return [f"I loved {first} and {second}", *FOLLOW_UPS[: turns - 1]]


def summarise(engine: Engine, sessions: int, wall_s: float, turns: Sequence[Turn],
              load_average: tuple[float, float]) -> Level:
    """Percentiles over every turn of one level; failed turns count as errors and nowhere else."""
    ok = [t for t in turns if t.error is None]
    per_token = [1000 * (t.last_s - t.llm_s) / (t.completion_tokens - 1) for t in ok if t.completion_tokens > 1]
    ttft = [1000 * t.ttft_s for t in ok]
    llm = [1000 * t.llm_s for t in ok]
    picks = [1000 * t.picks_s for t in ok if t.picks_s is not None]
    errors = [t.error for t in turns if t.error is not None]
    return Level(
        engine=engine,
        sessions=sessions,
        turns=len(turns),
        errors=len(errors),
        ttft_ms_p50=percentile(ttft, 0.5) if ttft else None,
        ttft_ms_p95=percentile(ttft, 0.95) if ttft else None,
        picks_ms_p50=percentile(picks, 0.5) if picks else None,
        llm_ms_p50=percentile(llm, 0.5) if llm else None,
        llm_ms_p95=percentile(llm, 0.95) if llm else None,
        ms_per_token_p50=percentile(per_token, 0.5) if per_token else None,
        ms_per_token_p95=percentile(per_token, 0.95) if per_token else None,
        tokens_per_s=sum(t.completion_tokens for t in ok) / wall_s if wall_s > 0 else None,
        mean_completion_tokens=statistics.fmean(t.completion_tokens for t in ok) if ok else None,
        mean_prompt_tokens=statistics.fmean(t.prompt_tokens for t in ok) if ok else None,
        mean_cached_tokens=statistics.fmean(t.cached_tokens for t in ok) if ok else None,
        wall_s=wall_s,
        load_average=load_average,
        first_error=errors[0] if errors else None,
    )


def targets(levels: Sequence[Level]) -> list[tuple[str, str]]:
    """issue 6's targets on 2 cores, each as (target, what was measured: met / missed / not measured)."""

    def find(engine: str, sessions: int) -> Level | None:
        return next((m for m in levels if m.engine == engine and m.sessions == sessions), None)

    rows = []
    at_16 = [m for m in levels if m.sessions == 16]
    rows.append(("16 concurrent sessions, 0 errors", ", ".join(
        f"{m.engine}: {m.errors} errors ({'met' if m.errors == 0 else 'missed'})" for m in at_16) or "not measured"))
    at_1 = [m for m in levels if m.sessions == 1 and m.ttft_ms_p50 is not None]
    rows.append(("p50 TTFT <= 300 ms at 1 session", ", ".join(
        f"{m.engine}: {m.ttft_ms_p50:.0f} ms ({'met' if m.ttft_ms_p50 <= 300 else 'missed'}; the LLM's first "
        f"words at {m.llm_ms_p50:.0f} ms)" for m in at_1) or "not measured"))
    base = find("transformers", 8)
    ratios = []
    for engine in ("vllm", "vllm-remote"):
        other = find(engine, 8)
        if base and other and base.tokens_per_s and other.tokens_per_s:
            ratio = other.tokens_per_s / base.tokens_per_s
            ratios.append(f"{engine}: {ratio:.2f}x ({'met' if ratio >= 1.3 else 'missed'})")
    rows.append(("vLLM >= 1.3x transformers tokens/s at 8 sessions", ", ".join(ratios) or "not measured"))
    return rows


def write_results(report: Report, out: Path) -> tuple[Path, Path]:
    """`out/serving.json` (the report) and `out/serving.md` (command, environment, table, targets)."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "serving.json", out / "serving.md"
    json_path.write_text(report.model_dump_json(indent=2) + "\n")

    def cell(value: float | None, digits: int = 0) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    loads = [x for m in report.levels for x in m.load_average]
    lines = [
        "# Serving load benchmark: concurrent chat sessions through the API",
        "",
        f"Command: `{report.command}`",
        "",
        *(f"- {key}: {value}" for key, value in report.environment.items()),
        *([f"- note: {report.options.note}"] if report.options.note else []),
        "",
        f"Each session: {report.options.turns} streamed turns (`max_tokens` {report.options.max_tokens}, greedy; "
        "the reply sentence ends at a newline, then the grounded list follows), each continuing the session by "
        "`session_id`, through the official `openai` async client against the real HTTP server on loopback. "
        "A failed turn ends its session: its remaining turns count as errors too.",
        "",
        "**The machine is shared** with other agents' jobs on the same 2 cores: the 1-minute load average "
        f"ranged {min(loads, default=0):.1f}-{max(loads, default=0):.1f} during these runs (column `load`, "
        "at the start and end of each level), so absolute numbers are pessimistic and vary between runs.",
        "",
        "TTFT is the time to the first text delta, the reply's opening clause (written by the dialogue manager "
        "from the turn's state, e.g. 'Since you liked Heat and Goodfellas,'); `LLM words` is the time to the "
        "second, the LLM's continuation of that clause (shown from its fourth word on); `picks` is the time to "
        "the first chunk that carries the structured recommendations (sent before the LLM starts). Prompt rows "
        "are text + soft tokens; `cached` of them had their KV reused (prefix caching).",
        "",
        "| engine | sessions | turns | errors | TTFT p50 ms | TTFT p95 ms | LLM words p50 ms | LLM words p95 ms "
        "| picks p50 ms | ms/token p50 | ms/token p95 | tokens/s (aggregate) | mean tokens/turn | mean prompt rows "
        "| mean cached rows | wall s | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {m.engine} | {m.sessions} | {m.turns} | {m.errors} | {cell(m.ttft_ms_p50)} | {cell(m.ttft_ms_p95)} "
        f"| {cell(m.llm_ms_p50)} | {cell(m.llm_ms_p95)} | {cell(m.picks_ms_p50)} | {cell(m.ms_per_token_p50, 1)} | {cell(m.ms_per_token_p95, 1)} "
        f"| {cell(m.tokens_per_s, 1)} | {cell(m.mean_completion_tokens, 1)} | {cell(m.mean_prompt_tokens)} "
        f"| {cell(m.mean_cached_tokens)} | {m.wall_s:.1f} | {m.load_average[0]:.1f}-{m.load_average[1]:.1f} |"
        for m in report.levels
    ]
    lines += ["", "| target (2 cores, SmolLM2-135M) | measured |", "|---|---|"]
    lines += [f"| {target} | {measured} |" for target, measured in targets(report.levels)]
    errors = [f"- {m.engine} x {m.sessions}: {m.first_error}" for m in report.levels if m.first_error]
    if errors:
        lines += ["", "First error per level:", *errors]
    md_path.write_text("\n".join(lines) + "\n")
    return json_path, md_path


async def _turn(client, session_id: str | None, text: str, max_tokens: int) -> Turn:
    started = time.perf_counter()
    first = llm = last = picks = None
    usage = None
    try:
        stream = await client.chat.completions.create(
            model=MODEL_NAME, messages=[{"role": "user", "content": text}], max_tokens=max_tokens, temperature=0,
            stream=True, stream_options={"include_usage": True},
            extra_body={"session_id": session_id} if session_id else None,
        )
        async for chunk in stream:
            session_id = chunk.model_extra.get("session_id", session_id)
            usage = chunk.usage or usage
            if picks is None and chunk.model_extra.get("recommendations"):
                picks = time.perf_counter() - started
            if chunk.choices and chunk.choices[0].delta.content:
                last = time.perf_counter() - started
                llm = last if first is not None and llm is None else llm
                first = last if first is None else first
    except Exception as exc:  # counted as an error in the report; the session stops here
        return Turn(session_id=session_id, error=f"{type(exc).__name__}: {exc}"[:300])
    if first is None or last is None or usage is None:
        return Turn(session_id=session_id, error="the stream carried no text or no usage")
    details = getattr(usage, "prompt_tokens_details", None)
    return Turn(session_id=session_id, ttft_s=first, picks_s=picks, llm_s=last if llm is None else llm, last_s=last, prompt_tokens=usage.prompt_tokens,
                cached_tokens=getattr(details, "cached_tokens", None) or 0, completion_tokens=usage.completion_tokens)


async def _session(client, session: int, turns: int, max_tokens: int) -> list[Turn]:
    done: list[Turn] = []
    session_id = None
    texts = user_turns(session, turns)
    for i, text in enumerate(texts):
        turn = await _turn(client, session_id, text, max_tokens)
        done.append(turn)
        if turn.error is not None:  # a failed turn ends the session: the rest count as errors
            skipped = Turn(session_id=turn.session_id, error="skipped: an earlier turn of this session failed")
            done += [skipped] * (len(texts) - i - 1)
            break
        session_id = turn.session_id
    return done


async def run_level(url: str, sessions: int, turns: int, max_tokens: int) -> tuple[float, list[Turn]]:
    """`sessions` sessions at once, `turns` turns each; (wall seconds, every turn)."""
    import openai

    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0,
                                  timeout=TURN_TIMEOUT_S) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*(_session(client, s, turns, max_tokens) for s in range(sessions)))
        return time.perf_counter() - started, [t for r in results for t in r]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_healthy(url: str, process: subprocess.Popen, log_path: Path) -> None:
    import httpx

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the API server did not become healthy; {log_path} ends:\n{tail}")
        time.sleep(1.0)


@contextmanager
def api_server(engine: Engine, options: Options, logs: Path) -> Iterator[str]:
    """This module's `--serve` mode in a child process (and for `vllm-remote` a vLLM server); yields the URL."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": str(VLLM_KV_CACHE_GIB),
           "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "0-1")}
    vllm = _vllm_server(options, logs, env) if engine == "vllm-remote" else nullcontext(None)
    with vllm as vllm_url:
        port = _free_port()
        command = [sys.executable, "-m", "benchmarks.serving", "--serve", engine, "--port", str(port),
                   "--options", options.model_dump_json(), *(["--vllm-url", vllm_url] if vllm_url else [])]
        log_path = logs / f"api-{engine}.log"
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(url, process, log_path)
            yield url
        finally:
            stop_process(process)


@contextmanager
def _vllm_server(options: Options, logs: Path, env: dict[str, str]) -> Iterator[str]:
    from ilm_model.llm_loading import BUNDLED, convert_bundled
    from serving.engines.vllm import serve_vllm

    settings = load_bench_settings(options.data_path, options.config)
    path = convert_bundled(settings.cache) if settings.llm == BUNDLED else settings.llm
    args = ["--dtype", "float32", "--enforce-eager", "--max-model-len", str(settings.serving.vllm_max_model_len),
            "--kv-cache-memory-bytes", str(VLLM_KV_CACHE_GIB * 2**30), "--seed", "0"]
    with serve_vllm(path, logs / "vllm-server.log", served_model_name=Path(path).name, args=args,
                    timeout_s=START_TIMEOUT_S, env=env) as url:
        yield url


def load_bench_settings(data_path: Path | None, config: Path | None, **serving: str):
    """ilmrec's settings for `--data-path` / `--config`, with `serving` overrides; session log in a temp dir."""
    from app.settings import load_settings

    overrides: dict[str, object] = {"serving": serving,
                                    "session_log": Path(tempfile.mkdtemp(prefix="bench-log-")) / "sessions.jsonl"}
    if data_path is not None:
        overrides["data"] = {"path": data_path}
    return load_settings(config, **overrides)


def serve(engine: Engine, port: int, vllm_url: str | None, options: Options) -> int:
    """The API over the trained artefacts with `engine`, on 127.0.0.1:`port`, until terminated."""
    import uvicorn

    from app.commands import build_service
    from app.pipeline import load_trained
    from serving.api.server import build_app, closing

    settings = load_bench_settings(options.data_path, options.config, engine=engine,
                                   **({"vllm_url": vllm_url} if vllm_url else {}))
    if options.untrained_ilm:
        artefacts = with_untrained_ilm(trained_folder(settings, options.artefacts, ("retrieval",)), settings)
    else:
        artefacts = load_trained(trained_folder(settings, options.artefacts), settings)
    service = build_service(settings, artefacts)
    app = build_app(service, MODEL_NAME, lifespan=closing(service))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
    return 0


def trained_folder(settings, artefacts: Path | None, stages: Sequence[str] = ("retrieval", "ilm")) -> Path:
    """`artefacts`, or the run folder these settings' fingerprint names, once `stages` are finished;
    SystemExit otherwise (this benchmark never trains)."""
    from app.pipeline import DONE, fingerprint, load_data

    if artefacts is None:
        data = load_data(settings)
        root = settings.cache / "artifacts" / f"{data.name}-{fingerprint(settings, data)}"
    else:
        root = artefacts.expanduser().resolve()
    missing = [stage for stage in stages if not (root / stage / DONE).is_file()]
    if missing:
        raise SystemExit(f"the {' and '.join(missing)} artefacts are not trained in {root}; run `ilmrec train` "
                         "with the same settings first, or pass --artefacts with a finished run folder")
    return root


def with_untrained_ilm(root: Path, settings):
    """The run folder's catalogue and trained retrieval stage, the settings' LLM, and an ILM as built before
    training, whose soft tokens are random at the scale of the LLM's input embeddings. Every tensor has the
    trained shape, so a turn costs what it costs with trained artefacts; the replies mean nothing."""
    import torch

    from app.pipeline import Artefacts
    from ilm_model.llm_loading import load_frozen_llm
    from ilm_model.modeling import ItemLanguageModel
    from ilm_model.soft_tokens import SoftTokenTable
    from retrieval.catalogue import Catalogue
    from retrieval.recommender import TwoTowerRecommender

    catalogue = Catalogue.load(root / "catalogue.json")
    recommender = TwoTowerRecommender.load(root / "retrieval", catalogue)
    llm, tokenizer = load_frozen_llm(settings.llm, settings.cache)
    hidden = llm.get_input_embeddings().embedding_dim
    ilm = ItemLanguageModel(settings.ilm.for_data(recommender.item_embeddings().shape[1], hidden)).eval()
    scale = float(llm.get_input_embeddings().weight.std())
    shape = (len(catalogue), ilm.num_query_tokens, hidden)
    tokens = scale * torch.randn(shape, generator=torch.Generator().manual_seed(0))
    return Artefacts(root, catalogue, recommender, ilm, SoftTokenTable(catalogue.ids, tokens), llm, tokenizer, {})


def _environment(options: Options) -> dict[str, str]:
    import torch
    import transformers

    env = {
        "machine": f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
                   f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "nice": str(os.nice(0)),
        "LLM": "SmolLM2-135M-Instruct (the bundled model, fp32)",
        "artefacts": f"{options.artefacts or 'the run folder the settings name'}"
                     + (" (trained retrieval, UNTRAINED ILM: random soft tokens)" if options.untrained_ilm else ""),
        "vLLM env": f"VLLM_CPU_KVCACHE_SPACE={VLLM_KV_CACHE_GIB}, "
                    f"VLLM_CPU_OMP_THREADS_BIND={os.environ.get('VLLM_CPU_OMP_THREADS_BIND', '0-1')}",
    }
    if importlib.util.find_spec("vllm") is not None:
        import vllm

        env["vllm"] = vllm.__version__
    return env


def run(options: Options) -> list[Level]:
    stages = ("retrieval",) if options.untrained_ilm else ("retrieval", "ilm")
    trained_folder(load_bench_settings(options.data_path, options.config), options.artefacts, stages)
    levels: list[Level] = []
    logs = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    print(f"server logs in {logs}", flush=True)
    for engine in options.engines:
        with api_server(engine, options, logs) as url:
            asyncio.run(run_level(url, 1, 1, options.max_tokens))  # warm-up
            for sessions in options.sessions:
                before = os.getloadavg()[0]
                wall, turns = asyncio.run(run_level(url, sessions, options.turns, options.max_tokens))
                level = summarise(engine, sessions, wall, turns, (before, os.getloadavg()[0]))
                print(level.model_dump_json(), flush=True)
                levels.append(level)
    return levels


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--serve" in argv:
        parser = argparse.ArgumentParser()
        parser.add_argument("--serve", choices=ENGINES, required=True)
        parser.add_argument("--port", type=int, required=True)
        parser.add_argument("--options", required=True, help="the benchmark's Options as JSON")
        parser.add_argument("--vllm-url")
        args = parser.parse_args(argv)
        return serve(args.serve, args.port, args.vllm_url, Options.model_validate_json(args.options))
    options = parse_args(argv)
    report = Report(command=("python -m benchmarks.serving " + shlex.join(argv)).strip(),
                    environment=_environment(options), options=options, levels=run(options))
    for path in write_results(report, options.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
