"""Retrieval-level recall of the dialogue manager's candidate ranking on ReDial test-dev (no LLM reply).

    nice -n 10 .venv/bin/python -m benchmarks.dialogue_ranking --artefacts DIR [--split tune|report]
        [--limit N] [--variants NAME,...]

Each variant is the real `ChatService` state tracking (`read_history`: linking, sentiment, constraints) and
ranking (`rank`: fused CF + ITC text scores, filters, boosts) with some `RankingConfig` fields changed; the
harness (`app.evaluation.replay.run_evaluation`) scores it like any system (condition rec, seen excluded).

Tuning protocol: ReDial test-dev dialogue ids are shuffled with seed `TUNE_SEED`; the first `TUNE_SHARE`
form the *tune* split, on which fusion weights may be chosen; the rest is the *report* split, the only one
whose numbers are quoted. Writes benchmarks/results/dialogue_ranking_<split>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
TUNE_SEED = 7
TUNE_SHARE = 0.3
KS = (1, 5, 10, 20, 50)

VARIANTS: dict[str, dict[str, Any]] = {
    # name: (RankingConfig overrides, with the ITC text scorer?)
    "cf-only": {"text": False},
    "text-only": {"cf_weight": 0.0},
    "fused-1:1": {},
    "fused-1:0.5": {"text_weight": 0.5},
    "fused-1:0.25": {"text_weight": 0.25},
    "fused-1:0.5+pop0.25": {"text_weight": 0.5, "popularity_weight": 0.25},
    "fused-1:0.5+pop0.5": {"text_weight": 0.5, "popularity_weight": 0.5},
    "fused-1:0.5-1turn": {"text_weight": 0.5, "text_turns": 1},
    "fused-1:0.5+asst0.5": {"text_weight": 0.5, "recommended_weight": 0.5},
    "fused-1:0.5+asst1": {"text_weight": 0.5, "recommended_weight": 1.0},
}


def split_dialogues(dialogue_ids: Sequence[str]) -> tuple[set[str], set[str]]:
    """(tune, report): a seeded `TUNE_SHARE` of the distinct dialogue ids, and the rest."""
    ids = sorted(set(dialogue_ids))
    order = np.random.default_rng(TUNE_SEED).permutation(len(ids))
    n_tune = int(round(TUNE_SHARE * len(ids)))
    tune = {ids[i] for i in order[:n_tune]}
    return tune, set(ids) - tune


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artefacts", type=Path, required=True, help="a finished artefact folder")
    parser.add_argument("--split", choices=("tune", "report"), default="tune")
    parser.add_argument("--limit", type=int, help="a seeded random sample of N turns of the split")
    parser.add_argument("--variants", help=f"comma-separated, from {', '.join(VARIANTS)} (default: all)")
    parser.add_argument("--shared", type=Path, default=SHARED)
    args = parser.parse_args(argv)

    from app.commands import build_service
    from app.evaluation.importers import import_crs, popularity_counts
    from app.evaluation.replay import run_evaluation
    from app.evaluation.systems import System, SystemContext, SystemOutput
    from app.pipeline import load_trained
    from app.settings import load_settings
    from serving.api.protocol import MAX_CONTENT_CHARS, MAX_MESSAGES, ChatMessage

    movielens = args.shared / "ml-latest-small"
    redial = args.shared / "conversations" / "redial" / "test-dev.jsonl"
    settings = load_settings(None, data={"dataset": "ml-latest-small", "path": movielens, "download": False})
    artefacts = load_trained(args.artefacts, settings)
    catalogue = artefacts.catalogue
    from retrieval.data import load_movielens

    data = load_movielens("ml-latest-small", path=movielens, download=False)
    counts = popularity_counts(catalogue, data.ratings["item_id"].to_numpy())
    turns = [t for t in import_crs("redial", redial, catalogue, counts).dataset.turns if t.targets]
    tune, report = split_dialogues([t.dialogue_id for t in turns])
    wanted = tune if args.split == "tune" else report
    turns = [t for t in turns if t.dialogue_id in wanted]
    if args.limit is not None and args.limit < len(turns):
        chosen = np.sort(np.random.default_rng(0).choice(len(turns), args.limit, replace=False))
        turns = [turns[i] for i in chosen]

    service = build_service(settings.model_copy(update={"session_log": Path("/dev/null")}), artefacts)
    service.session_log = None
    base_ranking = service.config.ranking
    scorer = service.text_scorer
    memo: dict[str, list] = {}
    find = service.linker.find
    service.linker.find = lambda text: memo.setdefault(text, find(text))  # contexts repeat across turns

    class RankingSystem(System):
        def __init__(self, name: str, overrides: dict[str, Any]):
            self.name = name
            self.text = overrides.get("text", True)
            self.ranking = base_ranking.model_copy(update={k: v for k, v in overrides.items() if k != "text"})

        def recommend(self, context: SystemContext, k: int) -> SystemOutput:
            messages = [ChatMessage(role=m["role"], content=m["content"][:MAX_CONTENT_CHARS])
                        for m in context.chat_messages()][-MAX_MESSAGES:]
            service.config = service.config.model_copy(update={"ranking": self.ranking})
            service.text_scorer = scorer if self.text else None
            return SystemOutput(item_ids=service.rank(service.read_history(messages))[:k])

    names = args.variants.split(",") if args.variants else list(VARIANTS)
    systems = [RankingSystem(n, VARIANTS[n]) for n in names]
    started = time.perf_counter()
    result = run_evaluation(turns, systems, catalogue, KS, seed=0, progress=False)
    seconds = time.perf_counter() - started
    rows = []
    for summary in result.systems:
        values = {f"R@{k}": summary.value(f"recall@{k}").mean for k in KS}
        values["NDCG@10"] = summary.value("ndcg@10").mean
        rows.append({"variant": summary.system, "rows": summary.metrics["seen_excluded"]["rec"].rows, **values,
                     "overrides": VARIANTS[summary.system]})
    command = "python -m benchmarks.dialogue_ranking " + shlex.join(argv if argv is not None else sys.argv[1:])
    header = (f"Made by `{command}`; ReDial test-dev, {args.split} split ({len(wanted)} dialogues, "
              f"{len(turns)} turns; split seed {TUNE_SEED}, tune share {TUNE_SHARE}), condition rec, seen excluded, "
              f"artefacts {args.artefacts.name}; {seconds:.0f} s.")
    lines = [header, "", "| variant | rows | " + " | ".join(f"R@{k}" for k in KS) + " | NDCG@10 |",
             "|---|---:|" + "---:|" * (len(KS) + 1)]
    for row in rows:
        lines.append(f"| {row['variant']} | {row['rows']} | "
                     + " | ".join(f"{row[f'R@{k}']:.4f}" for k in KS) + f" | {row['NDCG@10']:.4f} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"dialogue_ranking_{args.split}"
    stem.with_suffix(".json").write_text(json.dumps({"command": command, "rows": rows}, indent=1))
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
