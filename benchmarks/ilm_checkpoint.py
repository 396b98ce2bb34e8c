"""Cost of an ILM training checkpoint at the default model size (MiniLM-sized Q-Former, K=8, adaptor to 576).

    nice -n 10 .venv/bin/python -m benchmarks.ilm_checkpoint

Builds the default ILM with AdamW state for every parameter (one step on random gradients), then times
`StepCheckpoints.after_step` (the atomic write) and `restore` (read, validate, load) `--repeats` times each, and
reports the file size, the median seconds and the write's cost spread over `--every` steps. Writes
`benchmarks/results/ilm_checkpoint.{json,md}`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import torch

from ilm_model.batching import ShuffledBatches
from ilm_model.configuration import ILMConfig
from ilm_model.modeling import ItemLanguageModel
from ilm_model.optimization import build_optimizer, warmup_cosine
from ilm_model.train_checkpoint import PhaseState, StepCheckpoints
from ilm_model.training_history import TrainingHistory
from retrieval.checkpoint_io import RunKey
from retrieval.storage import write_atomic

NAME = "ilm_checkpoint"
RESULTS = Path(__file__).resolve().parent / "results"


def phase_state(config: ILMConfig, seed: int) -> PhaseState:
    """A fresh default-size ILM whose AdamW holds state for every parameter (as after a phase-1 step)."""
    torch.manual_seed(seed)
    model = ItemLanguageModel.from_config(config)
    optimizer = build_optimizer(model.named_parameters(), 1e-4, 0.05)
    schedule = warmup_cosine(optimizer, 2, 10)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()
    schedule.step()
    generator = torch.Generator().manual_seed(seed)
    return PhaseState(model, optimizer, schedule, generator, {"rows": ShuffledBatches(1000, 32, generator)})


def measure(repeats: int, every: int, directory: Path) -> dict[str, float]:
    config = ILMConfig().for_data(64, 576)
    run = RunKey(config=config.model_dump(mode="json"), data="benchmark")
    saved, fresh, history = phase_state(config, 0), phase_state(config, 1), TrainingHistory()
    next(saved.samplers["rows"])
    writes, reads = [], []
    for _ in range(repeats):
        tick = time.perf_counter()
        StepCheckpoints(directory, run, every).after_step("phase1", every - 1, 10 * every, saved, history)
        writes.append(time.perf_counter() - tick)
        tick = time.perf_counter()
        step = StepCheckpoints(directory, run, every).restore("phase1", fresh, history)
        reads.append(time.perf_counter() - tick)
        assert step == every
    for name, tensor in saved.model.state_dict().items():
        assert torch.equal(fresh.model.state_dict()[name], tensor), name
    size = (directory / "checkpoint.safetensors").stat().st_size
    return {
        "parameters": sum(p.numel() for p in saved.model.parameters()),
        "file_mb": size / 2**20,
        "write_s": median(writes),
        "restore_s": median(reads),
        "write_ms_per_step": median(writes) / every * 1000,
    }


def report(result: dict) -> str:
    return "\n".join([
        "# ILM checkpoint cost", "",
        f"`{result['command']}` (load average {result['load']}; median of {result['repeats']} runs)", "",
        "| parameters | file (MiB) | write (s) | restore (s) | write per step at every=" f"{result['every']} (ms) |",
        "| --- | --- | --- | --- | --- |",
        f"| {result['parameters']:,} | {result['file_mb']:.0f} | {result['write_s']:.2f} | {result['restore_s']:.2f} "
        f"| {result['write_ms_per_step']:.0f} |", "",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--every", type=int, default=50, help="checkpoint interval the write cost is spread over")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load = f"{os.getloadavg()[0]:.1f}"
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args.repeats, args.every, Path(tmp))
    result |= {
        "command": shlex.join(
            ["nice", "-n", "10", ".venv/bin/python", "-m", "benchmarks.ilm_checkpoint",
             *(argv if argv is not None else sys.argv[1:])]
        ),
        "load": f"{load} -> {os.getloadavg()[0]:.1f}", "repeats": args.repeats, "every": args.every,
    }
    write_atomic(args.results_dir / f"{NAME}.json", json.dumps(result, indent=2).encode())
    md = report(result)
    write_atomic(args.results_dir / f"{NAME}.md", md.encode())
    print(md)


if __name__ == "__main__":
    main()
