"""Retrieval-level recall of the dialogue manager's candidate ranking on ReDial test-dev (no LLM reply).

    nice -n 10 .venv/bin/python -m benchmarks.dialogue_ranking --artefacts DIR [--split tune|report]
        [--limit N] [--variants NAME,...] [--out-stem NAME]

Each variant is the dialogue manager's state tracking (`serving.dialogue.read_history`: linking, sentiment,
constraints) and ranking (`candidates`: fused CF + ITC text scores, filters, boosts), as `ChatService.rank`
does it, with some `RankingConfig` fields changed (the LLM reply is not generated); the harness (`app.evaluation.replay.run_evaluation`) scores it like any system (condition rec, seen excluded).
Variants with an "llm" weight then re-order the top `RERANK_N` with `serving.llm_rerank.LLMReranker` (the frozen
LLM's mean log-prob of each title after the phase-2 next-item prompt, the last liked items as ILM soft tokens),
fused as z(rank score) + w z(LLM score) ("only": the LLM order alone; "calibrated": the LLM score minus the
title's prior with the history slot left empty, `LLMReranker.prior_scores`); the LLM is loaded as serving loads it
(`ilm_model.llm_loading.load_frozen_llm` with the app settings' `llm` and cache, e.g. ILMREC_CACHE_DIR).

Variants with a "prior" weight add the conversation prior (`serving.conversation_prior`: in how many dialogues
each movie is mentioned or recommended, smoothed towards rating popularity, and, with a co_mention_weight, how
often each movie came up beside the folded-in ones) learned from dialogues the scored
turns are not in: on the report split, the whole tune split; on the tune split, cross-fitted (its dialogues
halved with seed `TUNE_SEED`; each half's turns get the prior of the other half, so a prior from half as many
dialogues as the report split gets). With `--folds K`, on either split, every dialogue of the test-dev file
(with or without a recommendation turn) is dealt into K folds (seed `TUNE_SEED`, `cross_fit`) and each scored
turn's prior is learned from all dialogues of the other K - 1 folds, tune and report dialogues alike, never
from its own dialogue: closer to serving with all the logs one has. The scored turns are the same; fusion
weights are still chosen on the tune split alone.

Tuning protocol: ReDial test-dev dialogue ids are shuffled with seed `TUNE_SEED`; the first `TUNE_SHARE`
form the *tune* split, on which fusion weights may be chosen; the rest is the *report* split, the only one
whose numbers are quoted. Writes benchmarks/results/<out-stem>.{json,md}, by default dialogue_ranking_<split>.
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
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
TUNE_SEED = 7
TUNE_SHARE = 0.3
KS = (1, 5, 10, 20, 50)
RERANK_N = 20
BEST = {"text": False, "recommended_weight": 1.0, "popularity_weight": 0.25}  # the tuned cf-only+asst1+pop0.25

PRIOR = {"text": False, "recommended_weight": 1.0, "popularity_weight": 0.0, "prior_weight": 4.0,
         "prior_strength": 50.0, "co_mention_weight": 0.0, "prior": True}  # the tuned cf-only+asst1+prior4.0+a50.0

VARIANTS: dict[str, dict[str, Any]] = {
    # name: RankingConfig overrides; "text": False leaves the ITC text scores out; "llm": the re-rank's weight,
    # "calibrated": its LLM score minus the title's prior; "half_life": rating popularity (the popularity term and
    # the prior's base) is `recency_weighted_counts` of all MovieLens ratings with this half-life in years;
    # "symmetric": co-mentions count the movies that came up together, not what was recommended beside each
    "cf-only": {"text": False, "popularity_weight": 0.0},
    "cf-only+asst0.5": {"text": False, "recommended_weight": 0.5, "popularity_weight": 0.0},
    "cf-only+pop0.25": {"text": False, "popularity_weight": 0.25},
    "cf-only+asst1": {"text": False, "recommended_weight": 1.0, "popularity_weight": 0.0},
    "cf-only+asst1+pop0.25": BEST,
    "cf-only+asst1+pop0.25+llm0.5": {**BEST, "llm": 0.5},
    "cf-only+asst1+pop0.25+llm1": {**BEST, "llm": 1.0},
    "cf-only+asst1+pop0.25+llm2": {**BEST, "llm": 2.0},
    "cf-only+asst1+pop0.25+llm-only": {**BEST, "llm": "only"},
    "cf-only+asst1+pop0.25+pmi0.5": {**BEST, "llm": 0.5, "calibrated": True},
    "cf-only+asst1+pop0.25+pmi1": {**BEST, "llm": 1.0, "calibrated": True},
    "cf-only+asst1+pop0.25+pmi2": {**BEST, "llm": 2.0, "calibrated": True},
    "cf-only+asst1+pop0.25+pmi-only": {**BEST, "llm": "only", "calibrated": True},
    "text-only": {"cf_weight": 0.0, "text_weight": 1.0, "popularity_weight": 0.0},
    **{f"cf-only+asst1+prior{w}+a{a}": {"text": False, "recommended_weight": 1.0, "popularity_weight": 0.0,
                                        "prior_weight": w, "prior_strength": a, "co_mention_weight": 0.0,
                                        "prior": True}
       for w in (0.5, 1.0, 2.0, 4.0, 8.0, 16.0) for a in (10.0, 50.0, 200.0)},
    **{f"prior4+{name}": {**PRIOR, **change} for name, change in (
        ("div0", {"diversity": 0.0}), ("div0.003", {"diversity": 0.003}), ("div0.01", {"diversity": 0.01}),
        ("div0.03", {"diversity": 0.03}), ("div0.1", {"diversity": 0.1}), ("div0.3", {"diversity": 0.3}), ("inc0.25", {"include_boost": 0.25}), ("inc0", {"include_boost": 0.0}),
        ("mood0", {"mood_boost": 0.0}), ("asst0", {"recommended_weight": 0.0}),
        ("neutral1", {"neutral_weight": 1.0}), ("co0.5", {"co_mention_weight": 0.5}),
        ("co1", {"co_mention_weight": 1.0}), ("co2", {"co_mention_weight": 2.0}), ("co4", {"co_mention_weight": 4.0}),
        ("co1+cf0", {"co_mention_weight": 1.0, "cf_weight": 0.0}), ("inc0+mood0+div0", {"include_boost": 0.0, "mood_boost": 0.0,
                                                                    "diversity": 0.0}))},
    **{f"prior4+co1+cue{w}+mu{mu}": {**PRIOR, "co_mention_weight": 1.0, "cue_weight": w, "cue_smoothing": mu}
       for w in (0.25, 0.5, 1.0, 2.0, 4.0) for mu in (1.0, 3.0, 10.0, 100.0)},
    **{f"prior4+co1+cue{w}+mu{mu}+turns{n}": {**PRIOR, "co_mention_weight": 1.0, "cue_weight": w,
                                              "cue_smoothing": mu, "cue_turns": n}
       for w in (0.25, 0.5, 0.75, 1.0) for mu in (1.0, 3.0, 10.0) for n in (1, 2)},
    **{f"prior4+co1+recency{h}": {**PRIOR, "co_mention_weight": 1.0, "half_life": h} for h in (1.0, 3.0, 10.0, 1e9)},
    **{f"cf-only+asst1+pop0.25+recency{h}": {**BEST, "half_life": h} for h in (1.0, 3.0, 10.0, 1e9)},
    "prior4+co1+symmetric": {**PRIOR, "co_mention_weight": 1.0, "symmetric": True},
    **{f"prior4+co1+support{s}": {**PRIOR, "co_mention_weight": 1.0, "cf_support": s} for s in (2.0, 5.0, 20.0)},
    **{f"cf-only+asst1+pop0.25+support{s}": {**BEST, "cf_support": s} for s in (2.0, 5.0, 20.0)},
    **{f"prior4+co1+{name}": {**PRIOR, "co_mention_weight": 1.0, **change} for name, change in (
        ("asst0.5", {"recommended_weight": 0.5}), ("asst2", {"recommended_weight": 2.0}),
        ("neutral0", {"neutral_weight": 0.0}), ("neutral1", {"neutral_weight": 1.0}),
        ("disliked0", {"disliked_weight": 0.0}), ("div0", {"diversity": 0.0}), ("div0.003", {"diversity": 0.003}),
        ("div0.01", {"diversity": 0.01}), ("inc0", {"include_boost": 0.0}),
        ("mood0", {"mood_boost": 0.0}), ("prior2", {"prior_weight": 2.0}), ("prior6", {"prior_weight": 6.0}))},
    "prior4+co1+cue0.25+mu3.0+turns1+symmetric": {**PRIOR, "co_mention_weight": 1.0, "cue_weight": 0.25,
                                                  "cue_smoothing": 3.0, "cue_turns": 1, "symmetric": True},
    "prior-only+a50": {"text": False, "cf_weight": 0.0, "popularity_weight": 0.0, "prior_weight": 1.0,
                       "prior_strength": 50.0, "co_mention_weight": 0.0, "prior": True},
    **{f"cf-only+asst1+pop0.25+prior{w}+a50": {**BEST, "prior_weight": w, "prior_strength": 50.0,
                                               "co_mention_weight": 0.0, "prior": True}
       for w in (1.0, 2.0)},
    "fused-1:1": {"text_weight": 1.0, "popularity_weight": 0.0},
    "fused-1:0.5": {"text_weight": 0.5, "popularity_weight": 0.0},
    "fused-1:0.25": {"text_weight": 0.25, "popularity_weight": 0.0},
    "fused-1:0.5+pop0.25": {"text_weight": 0.5, "popularity_weight": 0.25},
    "fused-1:0.5+pop0.5": {"text_weight": 0.5, "popularity_weight": 0.5},
    "fused-1:0.5-1turn": {"text_weight": 0.5, "text_turns": 1, "popularity_weight": 0.0},
    "fused-1:0.5+asst0.5": {"text_weight": 0.5, "recommended_weight": 0.5, "popularity_weight": 0.0},
    "fused-1:0.5+asst1": {"text_weight": 0.5, "recommended_weight": 1.0, "popularity_weight": 0.0},
    "fused-1:0.1+asst1+pop0.25": {"text_weight": 0.1, "recommended_weight": 1.0, "popularity_weight": 0.25},
    "fused-1:0.25+asst1+pop0.25": {"text_weight": 0.25, "recommended_weight": 1.0, "popularity_weight": 0.25},
    "fused-1:0.5+asst1+pop0.25": {"text_weight": 0.5, "recommended_weight": 1.0, "popularity_weight": 0.25},
    "fused-1:1+asst1+pop0.25": {"text_weight": 1.0, "recommended_weight": 1.0, "popularity_weight": 0.25},
}


def split_dialogues(dialogue_ids: Sequence[str]) -> tuple[set[str], set[str]]:
    """(tune, report): a seeded `TUNE_SHARE` of the distinct dialogue ids, and the rest."""
    ids = sorted(set(dialogue_ids))
    order = np.random.default_rng(TUNE_SEED).permutation(len(ids))
    n_tune = int(round(TUNE_SHARE * len(ids)))
    tune = {ids[i] for i in order[:n_tune]}
    return tune, set(ids) - tune


def recency_weighted_counts(rows: np.ndarray, timestamps: np.ndarray, n_items: int,
                            half_life: float) -> np.ndarray:
    """`[n_items]` rating counts in which a rating `half_life` (in the timestamps' unit) older than the newest
    counts half, rating popularity that favours what people watched lately:

        b_i = sum over the ratings (r, t) with r = i of 2^(-(t_max - t) / h),    h = `half_life`

    `rows` `[n_ratings]` catalogue rows, `timestamps` `[n_ratings]`."""
    if half_life <= 0:
        raise ValueError(f"half_life must be > 0, got {half_life}")
    timestamps = np.asarray(timestamps, dtype=np.float64)
    if not len(timestamps):
        return np.zeros(n_items)
    weights = np.exp2(-(timestamps.max() - timestamps) / half_life)
    return np.bincount(np.asarray(rows, np.int64), weights=weights, minlength=n_items).astype(np.float64)


def cross_fit(dialogue_ids: set[str], k: int) -> dict[str, set[str]]:
    """Each id -> every id outside its fold: the ids, sorted and shuffled with seed `TUNE_SEED`, cut into `k`
    folds at positions i * n // k (i = 0..k)."""
    ids = sorted(dialogue_ids)
    order = np.random.default_rng(TUNE_SEED).permutation(len(ids))
    cuts = [i * len(ids) // k for i in range(k + 1)]
    folds = [{ids[j] for j in order[start:end]} for start, end in zip(cuts, cuts[1:])]
    return {d: training for fold in folds for training in [set(ids) - fold] for d in fold}


def prior_folds(dialogue_ids: set[str], split: str, tune: set[str], everything: set[str] | None = None,
                k: int | None = None) -> dict[str, set[str]]:
    """For each scored dialogue id, the dialogues its conversation prior is learned from (see the module doc):
    with `k`, the other `k` - 1 folds of `everything` (all dialogues of the file); without, on the report split
    the tune split, on the tune split the other half of it."""
    if k is not None:
        return {d: training for d, training in cross_fit(everything, k).items() if d in dialogue_ids}
    if split == "report":
        return {d: tune for d in dialogue_ids}
    return cross_fit(dialogue_ids, 2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artefacts", type=Path, required=True, help="an artefact folder (retrieval finished; "
                        "variants using text need the ILM stage too)")
    parser.add_argument("--split", choices=("tune", "report"), default="tune")
    parser.add_argument("--limit", type=int, help="a seeded random sample of N turns of the split")
    parser.add_argument("--variants", help=f"comma-separated, from {', '.join(VARIANTS)} (default: all)")
    parser.add_argument("--torch-threads", type=int, default=1, help="intra-op threads (1 is fastest when shared)")
    parser.add_argument("--baselines", action="store_true", help="also the harness's popularity and retrieval")
    parser.add_argument("--folds", type=int, help="learn each scored turn's conversation prior from the other "
                        "K - 1 of K folds (by dialogue) of the whole test-dev file instead (see the module doc)")
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--out-stem", help="result file name without suffix (default dialogue_ranking_<split>)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.torch_threads)

    from app.conversation_logs import dialogue_items, dialogue_requests
    from app.evaluation.importers import import_crs, popularity_counts
    from app.evaluation.replay import run_evaluation
    from app.evaluation.systems import System, SystemContext, SystemOutput
    from retrieval.catalogue import Catalogue
    from retrieval.data import load_movielens
    from retrieval.recommender import TwoTowerRecommender
    from serving.config import RankingConfig
    from serving.conversation_prior import dialogue_statistics, smoothed_log_prior, word_cues
    from serving.dialogue import CatalogueArrays, candidates, read_history
    from serving.linking import TitleLinker
    from serving.llm_rerank import LLM_ONLY, fuse

    names = args.variants.split(",") if args.variants else list(VARIANTS)
    movielens = args.shared / "ml-latest-small"
    redial = args.shared / "conversations" / "redial" / "test-dev.jsonl"
    catalogue = Catalogue.load(args.artefacts / "catalogue.json")
    recommender = TwoTowerRecommender.load(args.artefacts / "retrieval", catalogue)
    popularity = recommender.popularity.counts.astype(np.float64)
    scorer = None
    if any(VARIANTS[n].get("text", True) for n in names):
        from ilm_model.modeling import ItemLanguageModel
        from serving.text_scores import ITCTextScorer

        scorer = ITCTextScorer(ItemLanguageModel.from_pretrained(args.artefacts / "ilm" / "model").eval(), recommender)
    reranker = None
    if any("llm" in VARIANTS[n] for n in names):
        from app.settings import load_settings
        from ilm_model.llm_loading import load_frozen_llm
        from ilm_model.soft_tokens import SoftTokenTable
        from serving.llm_rerank import LLMReranker

        settings = load_settings()
        llm, tokenizer = load_frozen_llm(settings.llm, settings.cache)
        soft_tokens = SoftTokenTable.load(args.artefacts / "ilm" / "soft_tokens.safetensors")
        reranker = LLMReranker(llm, tokenizer, soft_tokens, catalogue)
    llm_memo: dict[tuple[tuple[int, ...], tuple[int, ...]], np.ndarray] = {}
    llm_seconds: list[float] = []
    prior_seconds: list[float] = []
    prior_ids: set[int] = set()

    def llm_scores(liked: list[int], top: list[int], calibrated: bool) -> np.ndarray:
        """The reranker's scores, once per (prompt history, candidates): the re-rank variants share them."""
        key = (tuple(reranker.history(liked)), tuple(top))
        if key not in llm_memo:
            tick = time.perf_counter()
            llm_memo[key] = reranker.scores(liked, top)
            llm_seconds.append(time.perf_counter() - tick)
        if not calibrated:
            return llm_memo[key]
        tick = time.perf_counter()
        prior = reranker.prior_scores(top)  # memoised per id inside
        prior_ids.update(top)
        prior_seconds.append(time.perf_counter() - tick)
        return llm_memo[key] - prior

    linker = TitleLinker(catalogue, popularity)
    memo: dict[str, list] = {}
    find = linker.find
    linker.find = lambda text: memo.setdefault(text, find(text))  # contexts repeat across turns

    data = load_movielens("ml-latest-small", path=movielens, download=False)
    counts = popularity_counts(catalogue, data.ratings["item_id"].to_numpy())
    dataset = import_crs("redial", redial, catalogue, counts).dataset
    turns = [t for t in dataset.turns if t.targets]
    tune, report = split_dialogues([t.dialogue_id for t in turns])
    wanted = tune if args.split == "tune" else report
    items_of = dialogue_items(dataset)
    requests_of = dialogue_requests(dataset)
    folds = prior_folds(wanted, args.split, tune, set(items_of), args.folds)
    prior_arrays: dict[tuple[frozenset[str], float, float | None, bool], CatalogueArrays] = {}
    rated = data.ratings[data.ratings["item_id"].isin(catalogue.ids)]

    def popularity_for(half_life: float | None) -> np.ndarray:
        """The recommender's rating popularity, or with `half_life` (years) `recency_weighted_counts` of all
        MovieLens ratings."""
        if half_life is None:
            return popularity
        return recency_weighted_counts(catalogue.rows(rated["item_id"].to_numpy()), rated["timestamp"].to_numpy(),
                                       len(catalogue), half_life * 365.25 * 24 * 3600.0)

    def arrays_for(dialogue_id: str, strength: float, half_life: float | None, symmetric: bool) -> CatalogueArrays:
        """The catalogue arrays with `popularity_for(half_life)` and the conversation prior learned from this
        dialogue's prior fold, smoothed towards that popularity; co-mentions count what was recommended beside
        each movie, as `app.conversation_logs` counts them, or (`symmetric`) the movies that came up together."""
        key = (frozenset(folds[dialogue_id]), strength, half_life, symmetric)
        if key not in prior_arrays:
            logged = sorted(d for d in key[0] if d in items_of)
            stats = dialogue_statistics((items_of[d] for d in logged), catalogue,
                                        None if symmetric else [requests_of[d][1] for d in logged])
            cues = word_cues((requests_of[d] for d in key[0] if d in requests_of), catalogue)
            base = popularity_for(half_life)
            prior_arrays[key] = CatalogueArrays.build(
                catalogue, base, smoothed_log_prior(stats.counts, base, strength), stats.co_mentions, cues)
        return prior_arrays[key]
    turns = [t for t in turns if t.dialogue_id in wanted]
    if args.limit is not None and args.limit < len(turns):
        chosen = np.sort(np.random.default_rng(0).choice(len(turns), args.limit, replace=False))
        turns = [turns[i] for i in chosen]

    plain_arrays = {h: CatalogueArrays.build(catalogue, popularity_for(h))
                    for h in {VARIANTS[n].get("half_life") for n in names}}

    class RankingSystem(System):
        """`ChatService.rank` over `ChatService.read_history`, without the service's LLM and store."""

        def __init__(self, name: str, overrides: dict[str, Any]):
            self.name = name
            self.text = overrides.get("text", True)
            llm = overrides.get("llm")
            self.llm = LLM_ONLY if llm == "only" else llm
            self.calibrated = overrides.get("calibrated", False)
            self.prior = overrides.get("prior", False)
            self.half_life = overrides.get("half_life")
            self.symmetric = overrides.get("symmetric", False)
            self.ranking = RankingConfig(**{k: v for k, v in overrides.items() if k not in
                                            ("text", "llm", "calibrated", "prior", "half_life", "symmetric")})

        def recommend(self, context: SystemContext, k: int) -> SystemOutput:
            state = read_history(((m["role"], m["content"]) for m in context.chat_messages()), linker, catalogue)
            text_scores = None
            if self.text and state.user_texts:
                text_scores = scorer.scores(" ".join(state.user_texts[-self.ranking.text_turns :]))
            arrays = plain_arrays[self.half_life]
            if self.prior:
                arrays = arrays_for(context.dialogue_id, self.ranking.prior_strength, self.half_life, self.symmetric)
            ids = candidates(state, recommender, catalogue, k, config=self.ranking, text_scores=text_scores,
                             arrays=arrays)
            if self.llm is not None and state.liked and len(ids) > 1:
                top = ids[:RERANK_N]
                ids = [top[p] for p in fuse(llm_scores(state.liked, top, self.calibrated), self.llm)] + ids[RERANK_N:]
            return SystemOutput(item_ids=ids)

    systems: list[System] = [RankingSystem(n, VARIANTS[n]) for n in names]
    if args.baselines:
        from app.evaluation.systems import PopularitySystem, RetrievalSystem

        systems += [PopularitySystem(recommender.popularity), RetrievalSystem(recommender)]
    started = time.perf_counter()
    result = run_evaluation(turns, systems, catalogue, KS, seed=0, progress=False)
    seconds = time.perf_counter() - started
    rows = []
    for summary in result.summaries:
        values = {f"R@{k}": summary.value(f"recall@{k}").mean for k in KS}
        values["NDCG@10"] = summary.value("ndcg@10").mean
        rows.append({"variant": summary.system, "rows": summary.metrics["seen_excluded"]["rec"].n, **values,
                     "overrides": VARIANTS.get(summary.system, "harness baseline")})
    command = "python -m benchmarks.dialogue_ranking " + shlex.join(argv if argv is not None else sys.argv[1:])
    header = (f"Made by `{command}`; ReDial test-dev, {args.split} split ({len(wanted)} dialogues, "
              f"{len(turns)} turns; split seed {TUNE_SEED}, tune share {TUNE_SHARE}), condition rec, seen excluded, "
              f"artefacts {args.artefacts.name}; {seconds:.0f} s. Variants: "
              + "; ".join(f"{n} = {VARIANTS[n]}" for n in names) + ".")
    rerank = None
    if reranker is not None:
        rerank = {"top_n": RERANK_N, "scored_turns": len(llm_seconds),
                  "mean_seconds": float(np.mean(llm_seconds)) if llm_seconds else None,
                  "median_seconds": float(np.median(llm_seconds)) if llm_seconds else None,
                  "prior_seconds_total": float(np.sum(prior_seconds)), "prior_items": len(prior_ids)}
        header += (f" LLM re-rank of the top {RERANK_N} ({settings.llm} LLM, last {reranker.prompts.history_length} "
                   f"liked items as soft tokens): {len(llm_seconds)} turns scored (turns without liked items "
                   f"keep the retrieval order)"
                   + (f", {rerank['mean_seconds']:.3f} s mean / {rerank['median_seconds']:.3f} s median per turn "
                      f"at {args.torch_threads} torch thread(s)" if llm_seconds else "")
                   + (f"; title priors of {rerank['prior_items']} distinct candidates (calibrated variants), "
                      f"{rerank['prior_seconds_total']:.0f} s in all." if prior_seconds else "."))
    lines = [header, "", "| variant | rows | " + " | ".join(f"R@{k}" for k in KS) + " | NDCG@10 |",
             "|---|---:|" + "---:|" * (len(KS) + 1)]
    for row in rows:
        lines.append(f"| {row['variant']} | {row['rows']} | "
                     + " | ".join(f"{row[f'R@{k}']:.4f}" for k in KS) + f" | {row['NDCG@10']:.4f} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / (args.out_stem or f"dialogue_ranking_{args.split}")
    stem.with_suffix(".json").write_text(json.dumps({"command": command, "rows": rows, "llm_rerank": rerank},
                                                    indent=1))
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
