"""Where the time to first token of one chat turn goes: stage timings of streamed turns through the live API.

    python -m benchmarks.serving_profile --label NAME [--turns 12] [--data-path DIR] [--config FILE]
        [--artefacts RUN_FOLDER] [--note TEXT] [--out benchmarks/results]

Serves the trained artefacts with the transformers engine (the same `build_service` as `ilmrec serve`) with
uvicorn in a thread of this process, and sends `--turns` streamed turns one at a time through the official
`openai` client (`max_tokens` 48, greedy), as `benchmarks.serving` does at 1 session: half open a session
("I loved X and Y"), half continue it. The service's stages are timed by wrapping them in place:

- state: reading the user's words into the dialogue state (entity linking included); `link`: every
  linking call of the turn (the state's, the framing's and the session log's);
- text scores (the ITC text scorer; skipped while `ranking.text_weight` is 0) and `rank` (fold-in retrieval,
  filters, boosts; the text scores included);
- prompt (building the embedded prompt), with its soft-token lookup and text embedding;
- framing: working out the notes on unknown or ambiguous titles that precede the sentence;
- prefill: the LLM's forward pass over the whole prompt; decode: each later one-token step;
- TTFT: request sent -> first content delta received by the client (what `benchmarks.serving` reports): the
  reply's opening clause (`serving.reply_opening`) in runs since it exists, the LLM's first words before;
- LLM words: request sent -> the second content delta, the LLM's continuation of the opening clause.

Each stage's figure is its median over the turns (ms); `prompt rows` is the median prompt length. Writes
`serving_profile.json` (every turn, per label; a rerun with the same label replaces it) and
`serving_profile.md` (one column per label) into `--out`.

    python -m benchmarks.serving_profile --rank-calls 200 [--artefacts RUN_FOLDER] ...

times only `ChatService.rank` instead (no server, no LLM call): 200 calls for each of three dialogue states
(cold start, the turns' "I loved X and Y", then its follow-up), printing median and p95 ms per state; it
writes nothing (`--label` is then not needed).
"""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import statistics
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from benchmarks.serving import LIKED, RESULTS, SHARED_MOVIELENS, load_bench_settings, trained_folder
from tests.serving.live import serve

MODEL_NAME = "ilmrec-profile"
STAGES = ("state", "link", "text scores", "rank", "prompt", "soft-token lookup", "text embedding", "framing",
          "prefill", "decode step")
FOLLOW_UP = "something darker, not animated"


class TurnProfile(BaseModel):
    """One turn: milliseconds per stage (summed over its calls), prompt rows, TTFT."""

    text: str
    stages_ms: dict[str, float]
    decode_steps: int
    prompt_rows: int
    cached_rows: int = Field(0, description="Prompt rows whose KV the engine reused (`cached_tokens`).")
    ttft_ms: float
    llm_ms: float | None = Field(None, description="To the second content delta (the LLM's words after the "
                                 "opening clause); None in runs made before replies had one.")
    reply: str = Field("", description="The streamed text: the LLM's sentence, then the grounded list.")


class ProfileRun(BaseModel):
    label: str
    command: str
    note: str | None = None
    environment: dict[str, str]
    turns: list[TurnProfile]

    def median(self, stage: str) -> float:
        if stage == "decode step":
            per_step = [t.stages_ms.get(stage, 0.0) / t.decode_steps for t in self.turns if t.decode_steps]
            return statistics.median(per_step) if per_step else 0.0
        return statistics.median(t.stages_ms.get(stage, 0.0) for t in self.turns)


class ProfileReport(BaseModel):
    runs: list[ProfileRun] = Field(default_factory=list)


class Recorder:
    """Times wrapped callables into the current turn (one turn at a time; calls from any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.ms: dict[str, float] = defaultdict(float)
            self.calls: dict[str, int] = defaultdict(int)

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.ms[stage] += 1000 * seconds
            self.calls[stage] += 1

    def wrap(self, owner: Any, attribute: str, stage: str | Callable[..., str]) -> None:
        """Replace `owner.attribute` by a timed version; `stage` may pick the stage from the call's kwargs."""
        inner = getattr(owner, attribute)

        @functools.wraps(inner)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.add(stage(**kwargs) if callable(stage) else stage, time.perf_counter() - started)

        setattr(owner, attribute, timed)


def instrument(service: Any, recorder: Recorder) -> None:
    """Wrap the stages of `service` (a ChatService over a TransformersEngine) in place."""
    import serving.service

    recorder.wrap(service, "_read", "state")
    recorder.wrap(serving.service, "read_history", "state")
    recorder.wrap(service.linker, "find", "link")
    if service.text_scorer is not None:
        recorder.wrap(service.text_scorer, "scores", "text scores")
    recorder.wrap(service, "rank", "rank")
    recorder.wrap(serving.service, "build_prompt", "prompt")
    recorder.wrap(service.soft_tokens, "lookup", "soft-token lookup")
    recorder.wrap(service.engine, "embed_tokens", "text embedding")
    recorder.wrap(service, "_framed", "framing")
    recorder.wrap(service.engine, "_forward", lambda **inputs: "prefill" if "inputs_embeds" in inputs else "decode step")


def run_turns(url: str, texts: Sequence[tuple[str, bool]], recorder: Recorder) -> list[TurnProfile]:
    """Each (text, continue the previous session?) as one streamed greedy turn; its profile."""
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)
    session_id = None
    profiles = []
    for text, follow_up in texts:
        recorder.reset()
        started = time.perf_counter()
        times: list[float] = []
        usage = None
        reply = []
        stream = client.chat.completions.create(
            model=MODEL_NAME, messages=[{"role": "user", "content": text}], max_tokens=48, temperature=0,
            stream=True, stream_options={"include_usage": True},
            extra_body={"session_id": session_id} if follow_up and session_id else None,
        )
        for chunk in stream:
            session_id = chunk.model_extra.get("session_id", session_id)
            usage = chunk.usage or usage
            if chunk.choices and chunk.choices[0].delta.content:
                reply.append(chunk.choices[0].delta.content)
                times.append(time.perf_counter() - started)
        assert len(times) > 1 and usage is not None, "the stream carried no opening and sentence, or no usage"
        profiles.append(TurnProfile(
            text=text, stages_ms={k: round(v, 2) for k, v in recorder.ms.items()},
            decode_steps=recorder.calls["decode step"], prompt_rows=usage.prompt_tokens, ttft_ms=1000 * times[0],
            llm_ms=1000 * times[1],
            cached_rows=getattr(usage.prompt_tokens_details, "cached_tokens", 0) or 0, reply="".join(reply),
        ))
    return profiles


def turn_texts(turns: int) -> list[tuple[str, bool]]:
    """Alternating: a new session naming two liked movies, then a follow-up in it."""
    texts = []
    for n in range(turns):
        first, second = LIKED[(n // 2) % len(LIKED)]
        texts.append((f"I loved {first} and {second}", False) if n % 2 == 0 else (FOLLOW_UP, True))
    return texts


def time_rank(service: Any, calls: int) -> dict[str, list[float]]:
    """Milliseconds of each of `calls` `service.rank` calls, per dialogue state (after one warm-up call)."""
    from serving.dialogue import DialogueState

    (liked_text, _), (follow_up, _) = turn_texts(2)
    liked = service._read(DialogueState(), liked_text)
    states = {"cold start": service._read(DialogueState(), "what should I watch?"), "liked": liked,
              "follow-up": service._read(liked, follow_up)}
    timings: dict[str, list[float]] = {}
    for name, state in states.items():
        service.rank(state)
        timings[name] = []
        for _ in range(calls):
            started = time.perf_counter()
            service.rank(state)
            timings[name].append(1000 * (time.perf_counter() - started))
    return timings


def write_results(report: ProfileReport, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "serving_profile.json", out / "serving_profile.md"
    json_path.write_text(report.model_dump_json(indent=2) + "\n")
    runs = report.runs
    lines = [
        "# Where the time to first token goes: one streamed turn through the API, by stage",
        "",
        "Transformers engine, SmolLM2-135M (float32 unless the label says otherwise), trained artefacts, 1 session, "
        "turns one at a time (`benchmarks/serving_profile.py`). Median ms per turn over each run's turns; `prefill` "
        "and the stages above it are on the way to the first token, `decode step` is per token.",
        "",
    ]
    for run in runs:
        lines += [f"- **{run.label}**: `{run.command}`" + (f" ({run.note})" if run.note else ""),
                  "  " + ", ".join(f"{k}: {v}" for k, v in run.environment.items())]
    lines += ["", "| stage | " + " | ".join(r.label for r in runs) + " |", "|---|" + "---|" * len(runs)]
    for stage in STAGES:
        lines.append(f"| {stage} | " + " | ".join(f"{r.median(stage):.1f}" for r in runs) + " |")
    lines.append("| prompt rows | " + " | ".join(f"{statistics.median(t.prompt_rows for t in r.turns):.0f}"
                                                 for r in runs) + " |")
    lines.append("| of which reused (cached) | " + " | ".join(
        f"{statistics.median(t.cached_rows for t in r.turns):.0f}" for r in runs) + " |")
    lines.append("| **TTFT (client)** | " + " | ".join(f"**{statistics.median(t.ttft_ms for t in r.turns):.0f}**"
                                                       for r in runs) + " |")
    lines.append("| TTFT p95 | " + " | ".join(
        f"{sorted(t.ttft_ms for t in r.turns)[max(0, round(0.95 * len(r.turns)) - 1)]:.0f}" for r in runs) + " |")
    lines.append("| LLM words (client) | " + " | ".join(
        f"{statistics.median(t.llm_ms for t in r.turns):.0f}" if all(t.llm_ms for t in r.turns) else "n/a"
        for r in runs) + " |")
    recorded = [r for r in runs if any(t.reply for t in r.turns)]
    if recorded:
        lines += ["", "The reply's sentence in each turn (its first line; in runs with an opening clause, the LLM "
                  "continues it, and `here are a few picks you might enjoy:` is the fixed continuation shown when "
                  "the LLM's was dropped as a fragment; before, `Here are a few picks you might enjoy:` was the "
                  "fixed sentence):"]
    for run in recorded:
        lines += ["", f"**{run.label}**", ""]
        lines += [f"- {t.text}: {t.reply.splitlines()[0] if t.reply else ''}" for t in run.turns]
    md_path.write_text("\n".join(lines) + "\n")
    return json_path, md_path


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", help="the column of this run (a rerun replaces it); required unless --rank-calls")
    parser.add_argument("--turns", type=int, default=12)
    parser.add_argument("--rank-calls", type=int, default=0, help="only time ChatService.rank, this many calls per "
                        "state (writes nothing)")
    parser.add_argument("--data-path", type=Path, default=SHARED_MOVIELENS if SHARED_MOVIELENS.is_dir() else None)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--artefacts", type=Path)
    parser.add_argument("--note")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.label is None and not args.rank_calls:
        parser.error("--label is required (unless --rank-calls)")

    import torch

    from app.commands import build_service
    from app.pipeline import load_trained
    from serving.api.server import build_app

    settings = load_bench_settings(args.data_path, args.config, engine="transformers")
    artefacts = load_trained(trained_folder(settings, args.artefacts), settings)
    service = build_service(settings, artefacts)
    if args.rank_calls:
        print(f"ChatService.rank, {args.rank_calls} calls per state, load {os.getloadavg()[0]:.1f}, nice {os.nice(0)}")
        for name, ms in time_rank(service, args.rank_calls).items():
            p95 = sorted(ms)[max(0, round(0.95 * len(ms)) - 1)]
            print(f"{name:>18}: median {statistics.median(ms):6.1f} ms, p95 {p95:6.1f} ms")
        return 0
    recorder = Recorder()
    instrument(service, recorder)
    with serve(build_app(service, MODEL_NAME)) as url:
        run_turns(url, turn_texts(2), recorder)  # warm-up
        load_before = os.getloadavg()[0]
        turns = run_turns(url, turn_texts(args.turns), recorder)
    environment = {"cores": str(os.cpu_count()), "torch threads": str(torch.get_num_threads()),
                   "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "unset"),
                   "nice": str(os.nice(0)), "load": f"{load_before:.1f}-{os.getloadavg()[0]:.1f}"}
    run = ProfileRun(label=args.label, command=("python -m benchmarks.serving_profile " + shlex.join(argv)).strip(),
                     note=args.note, environment=environment, turns=turns)
    json_path = args.out / "serving_profile.json"
    report = ProfileReport.model_validate_json(json_path.read_text()) if json_path.exists() else ProfileReport()
    report.runs = [r for r in report.runs if r.label != run.label] + [run]
    for stage in STAGES:
        print(f"{stage:>18}: {run.median(stage):8.1f} ms")
    print(f"{'TTFT':>18}: {statistics.median(t.ttft_ms for t in turns):8.1f} ms")
    print(f"{'LLM words':>18}: {statistics.median(t.llm_ms or 0.0 for t in turns):8.1f} ms")
    for path in write_results(report, args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
