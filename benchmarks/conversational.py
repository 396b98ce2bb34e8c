"""Conversational benchmark: the evaluation harness on ReDial test-dev and INSPIRED test, ML-latest-small catalogue.

    .venv/bin/python -m benchmarks.conversational [--limit N] [--llm-limit N] [--systems popularity,...] [--seed 0]
        [--prior-from-tune]

Trains (or loads from the artefact cache) what the systems need through `app.pipeline.prepare`, runs
`app.evaluation.command.evaluate_command`, and writes `benchmarks/results/conversational.json` (every figure)
and `benchmarks/results/conversational.md` (the report, headed by the command that made it); plots, HTML and
the entity mappings go to `benchmarks/results/conversational/`. Needs `../shared/data` (the team's machines).

`--prior-from-tune` evaluates ReDial on the report split of `benchmarks.dialogue_ranking` only and gives the
chat service (the `dialogue` system) the conversation prior learned from the tune split's dialogues, through
the product's own `conversation_logs` setting (both splits are written as CRSLab files to a temporary folder:
the data never goes into the repository).
"""

from __future__ import annotations

import argparse
import atexit
import json
import shlex
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"


def split_redial(redial: Path, movielens: Path, folder: Path) -> tuple[Path, Path]:
    """(report, tune): the ReDial file's rows of each `benchmarks.dialogue_ranking` split as CRSLab files in
    `folder`, with the entity map beside them."""
    from app.evaluation.importers import import_crs, popularity_counts
    from retrieval.storage import write_atomic
    from benchmarks.dialogue_ranking import split_dialogues
    from retrieval.data import load_movielens

    data = load_movielens("ml-latest-small", path=movielens, download=False)
    counts = popularity_counts(data.catalogue, data.ratings["item_id"].to_numpy())
    turns = [t for t in import_crs("redial", redial, data.catalogue, counts).dataset.turns if t.targets]
    tune, report = split_dialogues([t.dialogue_id for t in turns])
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(redial.parent / "entity2id.json", folder / "entity2id.json")
    lines = [line for line in redial.read_text().splitlines() if line.strip()]
    paths = []
    for name, wanted in (("report", report), ("tune", tune)):
        chosen = [line for line in lines if str(json.loads(line).get("dialog_id")) in wanted]
        path = folder / f"{name}.jsonl"
        write_atomic(path, ("\n".join(chosen) + "\n").encode())
        paths.append(path)
    return paths[0], paths[1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=SHARED, help="the shared data folder (default ../shared/data)")
    parser.add_argument("--systems", help="comma-separated systems (default: all in-process systems)")
    parser.add_argument("--limit", type=int, help="a seeded random sample of N turns per dataset")
    parser.add_argument("--llm-limit", type=int, help="the LLM systems replay a seeded sample of N turns per dataset")
    parser.add_argument("--seed", type=int, default=0, help="seeds the turn sample and the systems (not training)")
    parser.add_argument("--config", type=Path, help="an ilmrec settings YAML (as for `ilmrec train`)")
    parser.add_argument("--artefacts", type=Path, help="a finished artefact folder to evaluate instead of prepare()")
    parser.add_argument("--system-config", type=Path, help="YAML/JSON of per-system settings (as for `ilmrec eval`)")
    parser.add_argument("--prior-from-tune", action="store_true",
                        help="ReDial report split only; the chat service learns its conversation prior from the tune split")
    parser.add_argument("--torch-threads", type=int,
                        help="torch intra-op threads; 1 is several times faster on a machine shared with other jobs")
    args = parser.parse_args(argv)
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)

    from app.commands import build_service
    from app.evaluation.command import evaluate_command
    from app.evaluation.options import DEFAULT_SYSTEMS, NEEDS_ILM, EvalOptions
    from app.pipeline import load_trained, prepare
    from app.settings import load_settings
    from retrieval.data import load_movielens

    movielens = args.shared / "ml-latest-small"
    redial = args.shared / "conversations" / "redial" / "test-dev.jsonl"
    inspired = args.shared / "conversations" / "inspired" / "test.jsonl"
    missing = [p for p in (movielens / "ratings.csv", redial, inspired) if not p.is_file()]
    if missing:
        print(f"missing {', '.join(map(str, missing))}: this benchmark needs ../shared/data", file=sys.stderr)
        return 2

    out = RESULTS / "conversational"
    conversation_logs: list[Path] = []
    if args.prior_from_tune:
        split_folder = Path(tempfile.mkdtemp(prefix="ilmrec-redial-split-"))
        atexit.register(shutil.rmtree, split_folder, ignore_errors=True)
        redial, tune_file = split_redial(redial, movielens, split_folder)
        conversation_logs = [tune_file]
    settings = load_settings(args.config, data={"dataset": "ml-latest-small", "path": movielens, "download": False},
                             conversation_logs=conversation_logs)
    options = EvalOptions(
        redial=redial,
        inspired=inspired,
        systems=args.systems.split(",") if args.systems else list(DEFAULT_SYSTEMS),
        limit=args.limit,
        llm_limit=args.llm_limit,
        seed=args.seed,
        out=out,
        artefacts=args.artefacts,
        system_config=args.system_config,
    )
    evaluate_command(
        options,
        load_data=lambda: load_movielens("ml-latest-small", path=movielens, download=False),
        load_artefacts=lambda: (
            load_trained(args.artefacts, settings, need_ilm=bool(NEEDS_ILM & set(options.systems)))
            if args.artefacts else prepare(settings)
        ),
        build_service=lambda artefacts: build_service(settings, artefacts),
    )
    command = "python -m benchmarks.conversational " + shlex.join(argv if argv is not None else sys.argv[1:])
    shutil.copyfile(out / "results.json", RESULTS / "conversational.json")
    report = (out / "report.md").read_text().replace("](", "](conversational/")
    (RESULTS / "conversational.md").write_text(f"Made by `{command.strip()}`.\n\n{report}")
    print(f"wrote {RESULTS / 'conversational.json'} and {RESULTS / 'conversational.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
