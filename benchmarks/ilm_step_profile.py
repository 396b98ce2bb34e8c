"""Cost of one ILM training step at the ILM benchmark's reduced scale, on one torch thread.

    nice -n 10 .venv/bin/python -m benchmarks.ilm_step_profile --data-path ../shared/data/ml-latest-small

Times (mean CPU ms per step over `--steps` steps after one warm-up step) phase 1 with each loss alone (ITC, ITG,
ITM, IIC, UIC; the ITM step includes the unimodal pass its hard negatives come from) and with all five, one
phase-2 step of the multitask mix with the frozen LLM, and the next-item scoring of one user's candidates;
a cProfile of the all-loss phase-1 step lists where its time goes. Each run is stored under `--label` in
`benchmarks/results/ilm_step_profile.json` (other labels are kept, e.g. a run against an older `ilm_model` put
first on PYTHONPATH), and `ilm_step_profile.md` shows every label side by side.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

import ilm_model
import retrieval
from benchmarks.ilm import LOSSES, RESULTS, Prepared, Scale, Variant, ilm_config, prepare
from ilm_model.configuration import Phase2Config
from ilm_model.evaluation import score_candidates
from ilm_model.item_text import describe
from ilm_model.llm_loading import load_frozen_llm
from ilm_model.modeling import ItemLanguageModel
from ilm_model.prompting import ItemPrompt
from ilm_model.tasks import build_task_mix, history_placeholder
from ilm_model.train import phase1_pair_inputs
from ilm_model.train_phase1 import train_phase1
from ilm_model.train_phase2 import train_phase2
from ilm_model.training_history import TrainingHistory
from retrieval.storage import write_atomic

NAME = "ilm_step_profile"
# the checkout retrieval/ comes from (a "before" tree has only ilm_model/ and benchmarks/)
REPO = Path(retrieval.__file__).resolve().parents[1]


def per_step_ms(run: Callable[[int], None], steps: int) -> float:
    """(CPU time of `run(1 + steps)` - CPU time of `run(1)`) / steps, in ms: setup and the warm-up step cancel
    out. CPU time of this one-thread process, so other jobs on the machine do not inflate it as they do wall time."""
    tick = time.process_time()
    run(1)
    one = time.process_time() - tick
    tick = time.process_time()
    run(1 + steps)
    return (time.process_time() - tick - one) / steps * 1000


def phase1_runner(prep: Prepared, scale: Scale, losses: tuple[str, ...]) -> Callable[[int], None]:
    """run(n): a fresh full ILM (K=8) trained n phase-1 steps with only `losses` switched on."""
    texts = [describe(prep.catalogue.movies[r]) for r in prep.train_rows]

    def run(steps: int) -> None:
        config = ilm_config(Variant("profile", "ilm", losses=losses), scale, prep.cf.shape[1], 576)
        config = config.model_copy(update={"phase1": config.phase1.model_copy(update={"steps": steps})})
        torch.manual_seed(0)
        model = ItemLanguageModel.from_config(config)
        pairs = phase1_pair_inputs(config, prep.interactions, len(prep.catalogue), prep.train_rows)
        train_phase1(model, texts, prep.cf[prep.train_rows], config.phase1, TrainingHistory(), 0, False, **pairs)

    return run


def measure(args: argparse.Namespace, scale: Scale) -> dict:
    """ms per step of each measurement and the cProfile text of the all-loss phase-1 run."""
    llm, tokenizer = load_frozen_llm(args.llm, args.cache_dir)
    prep = prepare(args, scale)
    timings: dict[str, float] = {}
    for loss in LOSSES:
        timings[f"phase 1, {loss.upper()} only"] = per_step_ms(phase1_runner(prep, scale, (loss,)), args.steps)
    run_all = phase1_runner(prep, scale, LOSSES)
    timings["phase 1, all five losses"] = per_step_ms(run_all, args.steps)
    profiler = cProfile.Profile()
    profiler.runcall(run_all, 1 + args.steps)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(12)

    config = ilm_config(Variant("profile", "ilm"), scale, prep.cf.shape[1], 576)
    tasks = build_task_mix(prep.catalogue, config.phase2, prep.train_rows, prep.interactions, seed=0)
    model = ItemLanguageModel.from_config(config)

    def run_phase2(steps: int) -> None:
        config2 = config.phase2.model_copy(update={"steps": steps})
        train_phase2(model, llm, tokenizer, tasks, prep.cf, config2, TrainingHistory(), 0, False)

    timings[f"phase 2, {scale.phase2_batch} examples"] = per_step_ms(run_phase2, args.steps)
    prompt = ItemPrompt.build(
        tokenizer, Phase2Config().next_item_instruction.replace("{history}", history_placeholder(2))
    )
    answers = [prompt.answer_ids(tokenizer, m.display_title, 40) for m in prep.catalogue.movies]
    soft = model.represent_items(prep.cf).soft_tokens
    tick = time.process_time()
    for history, _, candidates in prep.cases:
        score_candidates(llm, prompt, [soft[int(r)] for r in history], [answers[c] for c in candidates])
    timings[f"next-item scoring, {scale.candidates} candidates (per user)"] = (
        (time.process_time() - tick) / max(1, len(prep.cases)) * 1000
    )
    return {"ms": timings, "profile": text.getvalue()}


def report(runs: dict[str, dict]) -> str:
    labels = list(runs)
    keys = list(dict.fromkeys(k for run in runs.values() for k in run["ms"]))
    rows = ["| step (CPU ms, 1 torch thread) | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for key in keys:
        rows.append(f"| {key} | " + " | ".join(
            f"{runs[lab]['ms'][key]:.0f}" if key in runs[lab]["ms"] else "n/a" for lab in labels) + " |")
    md = ["# ILM step profile", "", *[f"- {lab} ({runs[lab]['scale']}): `{runs[lab]['command']}`" for lab in labels],
          "", "Load average during the runs: " + ", ".join(f"{lab}: {runs[lab]['load']}" for lab in labels) + ".", "",
          *rows, ""]
    for lab in labels:
        md += [f"## cProfile of the all-loss phase-1 run, {lab}", "", "```", runs[lab]["profile"].strip(), "```", ""]
    return "\n".join(md)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-latest-small")
    parser.add_argument("--data-path", type=Path, default=None)
    parser.add_argument("--retrieval-dir", type=Path, default=None)
    parser.add_argument("--llm", default="bundled")
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/ilmrec").expanduser())
    parser.add_argument("--steps", type=int, default=4, help="timed steps per measurement (after one warm-up)")
    parser.add_argument("--users", type=int, default=3, help="next-item test users whose candidates are scored")
    parser.add_argument("--qformer-layers", type=int, default=2)
    parser.add_argument("--itm-items", type=int, default=0, help="items per batch ITM runs on (0 = all)")
    parser.add_argument("--label", default="current", help="name of this run's column in the report")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument("--merge-from", type=Path, nargs="+", default=None,
                        help="measure nothing: add the runs stored in these json files and rewrite the report")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    path = args.results_dir / f"{NAME}.json"
    runs = json.loads(path.read_text())["runs"] if path.exists() else {}
    for other in args.merge_from or ():
        runs |= json.loads(other.read_text())["runs"]
    if not args.merge_from:
        # 800 items, K=8, phase-1 batch 32 items + 32 IIC / UIC pairs, phase-2 batch 4: the first ILM benchmark run
        # (itm_items only when set: the older benchmarks/ilm.py of a "before" run has no such field)
        scale = Scale(800, args.qformer_layers, 20, 30, 32, 4, args.users, 50, 16, 100, 20, 2,
                      **({"itm_items": args.itm_items} if args.itm_items else {}))
        # a run against another tree (`git archive <commit> ilm_model benchmarks/ilm.py` unpacked elsewhere, this
        # script copied into its benchmarks/) says so
        source = Path(ilm_model.__file__).resolve().parents[1]
        prefix = "" if (source / ".git").exists() else f"cd {source} && PYTHONPATH={source}:{REPO} "
        command = prefix + "nice -n 10 .venv/bin/python -m benchmarks.ilm_step_profile " + shlex.join(
            argv if argv is not None else sys.argv[1:]
        )
        load = f"{os.getloadavg()[0]:.1f}"
        runs[args.label] = measure(args, scale) | {
            "command": command, "load": f"{load} -> {os.getloadavg()[0]:.1f}",
            "scale": f"{scale.items} items, {scale.qformer_layers}-layer Q-Former, K=8, phase-1 batch "
                     f"{scale.batch_size} + {scale.batch_size} IIC / UIC pairs, ITM on "
                     f"{getattr(scale, 'itm_items', None) or scale.batch_size} items, phase-2 batch {scale.phase2_batch}; mean of "
                     f"{args.steps} steps after a warm-up step",
        }
    write_atomic(path, json.dumps({"runs": runs}, indent=2).encode())
    md = report(runs)
    write_atomic(args.results_dir / f"{NAME}.md", md.encode())
    print(md)


if __name__ == "__main__":
    main()
