"""Soak test of the chat API: a steady request rate over several sessions for a bounded time.

    python -m benchmarks.soak [--minutes 10] [--warmup-minutes 1] [--rate 2] [--sessions 8]
        [--turns-per-session 8] [--system tiny|product] [--data-path DIR] [--artefacts RUN_FOLDER]
        [--out benchmarks/results]

`--system tiny` (default) serves the tiny test system (random 2-layer chat LLM, synthetic 40-movie catalogue,
briefly trained two-tower recommender, random soft tokens; built into a temporary folder, nothing is trained for
long) with uvicorn in a child process (`tests.serving.api_process`). `--system product` serves the product's
chat service on its embedded defaults over trained artefacts (SmolLM2-135M in the transformers engine; the run
folder `--artefacts`, or the one the settings name: `make run` trains it) through the serving benchmark's API
child (`benchmarks.serving --serve transformers`), which never trains. Either listens on a free loopback port
with the in-memory session store. The benchmark then sends turns at `--rate` per second (open loop: one is due every 1/rate s) to `--sessions` conversations
in turn, alternating streamed and plain requests; a conversation starts afresh after `--turns-per-session`
turns. A turn that is due while its conversation is still busy is skipped and counted (the server fell
behind). An error is any non-200 status, an `error` event in a stream, a missing `[DONE]` or a failed
connection.

Memory: the child's resident set size (VmRSS from /proc) is sampled every `--sample-s` seconds. Growth =
(RSS at the end - RSS at the end of the warm-up) / RSS at the end of the warm-up; the slope is a least-squares
line through the samples after the warm-up, in MiB per minute. Latency percentiles cover the turns after the
warm-up. Writes `soak.json` (every figure and sample) and `soak.md` (the table and the exact command) into
`--out`; `soak_product.*` for `--system product`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from typing import Literal

from pydantic import BaseModel, Field

from benchmarks.gpu_vllm import percentile
from retrieval.storage import write_atomic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
START_TIMEOUT_S = 300
TURN_TIMEOUT_S = 120
TARGET_GROWTH = 0.10
USER_TURNS = ["I loved {title}", "something darker", "not animated", "from the nineties", "a comedy maybe",
              "I didn't like that last one", "something more uplifting", "surprise me"]
TITLES = ["Heat", "Toy Story", "Memento", "Notting Hill", "Fight Club", "Up", "Zodiac", "Shrek"]


class Options(BaseModel):
    minutes: float = Field(10.0, gt=0, description="How long requests are sent, warm-up included.")
    warmup_minutes: float = Field(1.0, ge=0, description="Leading time left out of latency and memory growth.")
    rate: float = Field(2.0, gt=0, description="Turns per second, over all sessions.")
    sessions: int = Field(8, ge=1, description="Conversations kept going at once.")
    turns_per_session: int = Field(8, ge=1, description="Turns before a conversation starts afresh.")
    sample_s: float = Field(5.0, gt=0, description="Seconds between RSS samples.")
    system: Literal["tiny", "product"] = Field("tiny", description="What is served (see the module docstring).")
    data_path: str = Field("", description="--system product: the MovieLens folder the artefacts were trained on.")
    artefacts: str = Field("", description="--system product: a finished run folder ('' = the settings' own).")
    out: Path = Field(RESULTS, description="Folder for soak.json and soak.md (soak_product.* for the product).")

    def model_post_init(self, _: object) -> None:
        if self.warmup_minutes >= self.minutes:
            raise ValueError(f"--warmup-minutes ({self.warmup_minutes}) must be below --minutes ({self.minutes})")


class TurnResult(BaseModel):
    at_s: float = Field(description="Seconds since the start of the run when the turn was sent.")
    latency_s: float
    stream: bool
    error: str | None = None


class RssSample(BaseModel):
    at_s: float
    rss_mib: float


class Summary(BaseModel):
    turns: int
    errors: int
    skipped: int = Field(description="Turns due while their session was still busy.")
    achieved_rate: float = Field(description="Turns per second completed after the warm-up.")
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    rss_warm_mib: float | None
    rss_end_mib: float | None
    rss_max_mib: float | None
    growth: float | None = Field(description="(end - warm) / warm RSS.")
    slope_mib_per_min: float | None


class Report(BaseModel):
    options: Options
    command: str
    machine: str
    niceness: int = Field(description="The benchmark's nice value (the API child inherits it).")
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    summary: Summary
    errors_seen: dict[str, int]
    rss: list[RssSample]
    turns: list[TurnResult]


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, field in Options.model_fields.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(field.default), default=field.default,
                            help=f"{field.description} Default: {field.default}.")
    return Options(**vars(parser.parse_args(argv)))


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope dy/dx of `points`; None for fewer than two distinct x."""
    if len({x for x, _ in points}) < 2:
        return None
    n = len(points)
    mean_x, mean_y = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    cov = sum((x - mean_x) * (y - mean_y) for x, y in points)
    var = sum((x - mean_x) ** 2 for x, _ in points)
    return cov / var


def summarise(turns: Sequence[TurnResult], rss: Sequence[RssSample], skipped: int, warmup_s: float,
              duration_s: float) -> Summary:
    """Errors over every turn; latency, rate and memory over what came after the warm-up."""
    after = [t for t in turns if t.at_s >= warmup_s]
    ok_ms = [1000 * t.latency_s for t in after if t.error is None]
    warm = [s for s in rss if s.at_s <= warmup_s]
    late = [s for s in rss if s.at_s >= warmup_s]
    base = warm[-1].rss_mib if warm else (late[0].rss_mib if late else None)
    end = rss[-1].rss_mib if rss else None
    per_min = slope([(s.at_s / 60, s.rss_mib) for s in late])

    def pct(q: float) -> float | None:
        return percentile(ok_ms, q) if ok_ms else None

    return Summary(
        turns=len(turns), errors=sum(t.error is not None for t in turns), skipped=skipped,
        achieved_rate=len(after) / max(duration_s - warmup_s, 1e-9),
        p50_ms=pct(0.50), p95_ms=pct(0.95), p99_ms=pct(0.99), max_ms=max(ok_ms) if ok_ms else None,
        rss_warm_mib=base, rss_end_mib=end, rss_max_mib=max((s.rss_mib for s in rss), default=None),
        growth=(end - base) / base if base and end is not None else None, slope_mib_per_min=per_min,
    )


def rss_mib(pid: int) -> float:
    """Resident set size of process `pid` in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def one_turn(
    client, model: str, text: str, session_id: str | None, stream: bool
) -> tuple[str | None, str | None]:
    """Send a turn; returns (session id, error or None)."""
    body = {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream}
    if session_id:
        body["session_id"] = session_id
    try:
        if not stream:
            response = await client.post("/v1/chat/completions", json=body)
            if response.status_code != 200:
                return session_id, f"HTTP {response.status_code}"
            return response.json()["session_id"], None
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                return session_id, f"HTTP {response.status_code}"
            events = [line async for line in response.aiter_lines() if line]
        if not events or events[-1] != "data: [DONE]":
            return session_id, "stream without [DONE]"
        if any('"error"' in e[:20] for e in events):
            return session_id, "error event in stream"
        return json.loads(events[0].removeprefix("data: "))["session_id"], None
    except Exception as exc:  # noqa: BLE001 - every failure is counted, by kind
        return session_id, type(exc).__name__


async def drive(url: str, pid: int, options: Options) -> tuple[list[TurnResult], list[RssSample], int]:
    import httpx

    model = httpx.get(f"{url}/v1/models", timeout=10).json()["data"][0]["id"]
    duration_s, interval = 60 * options.minutes, 1 / options.rate
    turns: list[TurnResult] = []
    rss: list[RssSample] = []
    busy = [False] * options.sessions
    session_ids: list[str | None] = [None] * options.sessions
    done_turns = [0] * options.sessions
    skipped = 0
    start = time.monotonic()

    async def sample_memory() -> None:
        while time.monotonic() - start < duration_s:
            rss.append(RssSample(at_s=time.monotonic() - start, rss_mib=rss_mib(pid)))
            await asyncio.sleep(options.sample_s)
        rss.append(RssSample(at_s=time.monotonic() - start, rss_mib=rss_mib(pid)))

    async def run_turn(client, s: int, n: int) -> None:
        k = done_turns[s] % options.turns_per_session
        text = USER_TURNS[k % len(USER_TURNS)].format(title=TITLES[s % len(TITLES)])
        sent = time.monotonic()
        session_id, error = await one_turn(client, model, text, None if k == 0 else session_ids[s], stream=n % 2 == 1)
        turns.append(TurnResult(at_s=sent - start, latency_s=time.monotonic() - sent, stream=n % 2 == 1,
                                error=error))
        session_ids[s] = session_id
        done_turns[s] += 1
        busy[s] = False

    limits = httpx.Limits(max_connections=options.sessions, max_keepalive_connections=options.sessions)
    async with httpx.AsyncClient(base_url=url, timeout=TURN_TIMEOUT_S, limits=limits) as client:
        sampler = asyncio.create_task(sample_memory())
        pending: set[asyncio.Task] = set()
        n = 0
        while (due := start + n * interval) < start + duration_s:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            s = n % options.sessions
            if busy[s]:
                skipped += 1
            else:
                busy[s] = True
                task = asyncio.create_task(run_turn(client, s, n))
                pending.add(task)
                task.add_done_callback(pending.discard)
            n += 1
        await asyncio.gather(*pending)
        await sampler
    return sorted(turns, key=lambda t: t.at_s), rss, skipped


def api_command(options: Options, tmp: Path, port: int) -> list[str]:
    """The API child's command line."""
    if options.system == "product":
        from benchmarks import serving

        child = serving.Options(
            engines=["transformers"], sessions=[1], turns=1, max_tokens=48, config=None, note=None,
            data_path=Path(options.data_path) if options.data_path else None,
            artefacts=Path(options.artefacts) if options.artefacts else None, untrained_ilm=False, out=tmp,
        )
        serve = ["--serve", "transformers", "--port", str(port), "--options", child.model_dump_json()]
        return [sys.executable, "-m", "benchmarks.serving", *serve]
    from tests.tiny_system import write_tiny_system

    system = write_tiny_system(tmp / "system")
    return [sys.executable, "-m", "tests.serving.api_process", str(system), str(port)]


def start_api(command: list[str], port: int, log_path: Path) -> subprocess.Popen:
    import httpx

    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log = open(log_path, "wb")  # noqa: SIM115 - the child writes to it for its whole life
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"the API did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)


def run(options: Options, command: str) -> Report:
    from tests.serving.conftest import free_port

    with tempfile.TemporaryDirectory(prefix="ilmrec-soak-") as tmp:
        port = free_port()
        process = start_api(api_command(options, Path(tmp), port), port, Path(tmp) / "api.log")
        load_before = os.getloadavg()
        try:
            turns, rss, skipped = asyncio.run(drive(f"http://127.0.0.1:{port}", process.pid, options))
        finally:
            process.terminate()
            process.wait(30)
    errors: dict[str, int] = {}
    for t in turns:
        if t.error:
            errors[t.error] = errors.get(t.error, 0) + 1
    return Report(
        options=options, command=command, niceness=os.nice(0),
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        load_before=load_before, load_after=os.getloadavg(),
        summary=summarise(turns, rss, skipped, 60 * options.warmup_minutes, 60 * options.minutes),
        errors_seen=errors, rss=rss, turns=turns,
    )


SERVED = {
    "tiny": "the tiny test system (random 2-layer chat LLM, hidden 256; synthetic 40-movie catalogue; briefly "
    "trained two-tower recommender; random soft tokens)",
    "product": "the product's chat service on its embedded defaults (frozen SmolLM2-135M in the transformers "
    "engine, trained retrieval model and ILM of the run folder {artefacts})",
}


def markdown(report: Report) -> str:
    s, o = report.summary, report.options

    def cell(value: float | None, fmt: str = ".0f") -> str:
        return "-" if value is None else format(value, fmt)

    growth_ok = s.growth is not None and s.growth < TARGET_GROWTH
    served = SERVED[o.system].format(artefacts=f"`{o.artefacts}`" if o.artefacts else "the settings name")
    return "\n".join([
        "# Soak test of the chat API",
        "",
        f"Command: `{report.command}`",
        "",
        f"What ran: {served}, served by uvicorn in a child process "
        f"on loopback with the in-memory session store; {o.rate:g} turns/s over {o.sessions} sessions of "
        f"{o.turns_per_session} turns, half of them streamed, for {o.minutes:g} min ({o.warmup_minutes:g} min "
        f"warm-up), at nice {report.niceness}. Machine: {report.machine}; load average "
        f"{report.load_before[0]:.1f} before, "
        f"{report.load_after[0]:.1f} after (shared with other jobs).",
        "",
        "| turns | errors | skipped | turns/s | p50 ms | p95 ms | p99 ms | max ms | RSS warm MiB | RSS end MiB "
        "| RSS max MiB | growth | slope MiB/min |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {s.turns} | {s.errors} | {s.skipped} | {s.achieved_rate:.2f} | {cell(s.p50_ms)} | {cell(s.p95_ms)} "
        f"| {cell(s.p99_ms)} | {cell(s.max_ms)} | {cell(s.rss_warm_mib, '.1f')} | {cell(s.rss_end_mib, '.1f')} "
        f"| {cell(s.rss_max_mib, '.1f')} | {cell(None if s.growth is None else 100 * s.growth, '.1f')}% "
        f"| {cell(s.slope_mib_per_min, '.2f')} |",
        "",
        f"Targets: 0 errors ({'met' if s.errors == 0 else 'missed'}); RSS growth after warm-up < "
        f"{TARGET_GROWTH:.0%} ({'met' if growth_ok else 'missed'}).",
        *([f"Errors by kind: {report.errors_seen}"] if report.errors_seen else []),
        "",
    ])


def write_results(report: Report, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    stem = "soak" if report.options.system == "tiny" else f"soak_{report.options.system}"
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    write_atomic(json_path, (report.model_dump_json(indent=1) + "\n").encode())
    write_atomic(md_path, markdown(report).encode())
    return json_path, md_path


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    options = parse_args(argv)
    report = run(options, shlex.join(["python", "-m", "benchmarks.soak", *argv]))
    print(markdown(report))
    json_path, md_path = write_results(report, options.out)
    print(f"wrote {json_path} and {md_path}")
    return 0 if report.summary.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
