"""Replay evaluation turns through systems and score them (He et al., CIKM 2023 protocol).

For each system and turn: the system sees the context up to the turn and returns ranked catalogue ids (ids
outside the catalogue are dropped and counted). It is asked for `max(k_list)` plus the number of movies
mentioned so far, so that removing those still leaves a full list. Then each (turn, target) pair is one
row, scored twice: on the list as returned (`seen_kept`) and with the movies mentioned earlier in the
dialogue removed (`seen_excluded`, the published setting). A target mentioned earlier is in condition `dis`,
otherwise `rec`; `all` pools both. Under `seen_excluded` a `dis` target can never be found, by definition.

Per turn, also: latency, the share of the first `REPEAT_K` recommendations that repeat a mentioned movie,
how many of them break the user's hard constraints (genres ruled out, a year range) as our dialogue state
reads the user's messages (`serving.dialogue.read_history`; the same reading for every system), and, for
systems that talk, how many movie names the reply contains and how many are not in the catalogue.

A system may be given only some of the turns (`only`, e.g. a seeded sample for the slow LLM systems). Each
system's summary then covers the turns it saw, and `common_summaries` scores every system again on the
turns all of them saw, so that systems can be compared on the same rows.

Deterministic for a fixed seed: Python, NumPy and (when loaded) torch are seeded before each system's pass;
only latencies vary between runs.
"""

from __future__ import annotations

import random
import sys
import time
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field
from tqdm.auto import tqdm

from app.evaluation.entity_linking import LinkingStats
from app.evaluation.importers import EvalTurn
from app.evaluation.logs import MalformedLine
from app.evaluation.options import DEFAULT_K
from app.evaluation.metrics import (
    METRICS,
    MeanStderr,
    mean_stderr,
    percentile,
    rank_of,
    repeat_share,
    share,
    without_mentioned,
)
from app.evaluation.systems import System, SystemContext, SystemFailure
from retrieval.catalogue import Catalogue
from serving.dialogue import DialogueState, has_constraints, passes_constraints, read_history
from serving.linking import TitleLinker

MODES = ("seen_excluded", "seen_kept")
CONDITIONS = ("rec", "dis", "all")
REPEAT_K = 10

Condition = Literal["rec", "dis"]
TurnKey = tuple[str, str, str]
"""(dataset, dialogue_id, turn_id): identifies an evaluation turn."""


def turn_key(turn: EvalTurn | RowResult | TurnResult) -> TurnKey:
    return (turn.dataset, turn.dialogue_id, turn.turn_id)


class RowResult(BaseModel):
    """One (turn, target) pair for one system: where the target landed (1-based; None = not in the list)."""

    system: str
    dataset: str
    dialogue_id: str
    turn_id: str
    target: int
    condition: Condition
    rank_kept: int | None
    rank_excluded: int | None


class TurnResult(BaseModel):
    """What one system did at one turn."""

    system: str
    dataset: str
    dialogue_id: str
    turn_id: str
    returned: int = Field(description="Catalogue ids returned.")
    out_of_catalogue_ids: int = Field(0, description="Returned ids that are not catalogue ids (dropped).")
    latency_ms: float
    repeat_share: float | None = Field(None, description=f"Share of the first {REPEAT_K} already mentioned.")
    constraint_violations: int | None = Field(
        None, description=f"Of the first {REPEAT_K}, how many break the user's hard constraints; None: none stated."
    )
    named_titles: int = 0
    unresolved_titles: int = 0
    failure: str | None = None


class ConditionMetrics(BaseModel):
    """`values["recall@10"]` etc. over the `n` rows of one condition."""

    n: int
    values: dict[str, MeanStderr]


class SystemSummary(BaseModel):
    """Every figure of one system on one dataset."""

    system: str
    dataset: str
    metrics: dict[str, dict[str, ConditionMetrics]] = Field(description="mode -> condition -> metrics.")
    turns: int
    failed_turns: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    repeat_share: MeanStderr
    constrained_turns: int = Field(0, description="Turns where the user had stated a hard constraint.")
    constraint_violations: int = Field(0, description=f"Items among their first {REPEAT_K} that break one.")
    named_titles: int
    unresolved_titles: int
    out_of_catalogue_name_share: float | None = Field(description="Unresolved / named titles in replies.")
    out_of_catalogue_ids: int

    def value(self, metric: str, mode: str = "seen_excluded", condition: str = "rec") -> MeanStderr:
        return self.metrics[mode][condition].values[metric]


class DatasetSummary(BaseModel):
    """Size and catalogue coverage of one dataset's evaluated turns."""

    name: str
    turns: int
    turns_with_targets: int
    rows: int = Field(description="(turn, target) pairs whose target is in the catalogue.")
    rows_rec: int
    rows_dis: int
    targets: int = Field(description="Target occurrences, in the catalogue or not.")
    coverage: float = Field(description="Share of target occurrences that are catalogue movies.")


class EvaluationResult(BaseModel):
    """Everything a run produced; `results.json` is this model."""

    k_list: list[int]
    seed: int
    repeat_k: int = REPEAT_K
    systems: list[dict[str, Any]]
    datasets: list[DatasetSummary]
    summaries: list[SystemSummary] = Field(description="Each system on the turns it was given.")
    common_summaries: list[SystemSummary] = Field(
        default_factory=list,
        description="Every system on the turns all systems were given; only when some were given fewer.",
    )
    rows: list[RowResult]
    turns: list[TurnResult]
    linking: list[LinkingStats] = Field(default_factory=list)
    malformed: dict[str, list[MalformedLine]] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)

    def summary(self, system: str, dataset: str) -> SystemSummary:
        for s in self.summaries:
            if s.system == system and s.dataset == dataset:
                return s
        raise KeyError(f"no results for system {system!r} on dataset {dataset!r}")


def run_evaluation(
    dataset_rows: Sequence[EvalTurn],
    systems: Sequence[System],
    catalogue: Catalogue,
    k_list: Sequence[int] = DEFAULT_K,
    seed: int = 0,
    progress: bool = True,
    only: Mapping[str, Collection[TurnKey]] | None = None,
) -> EvaluationResult:
    """Replay every turn through every system; score rows, summarise per system and dataset.

    `only` maps a system name to the turns (`turn_key`) it replays; systems not named replay all turns.
    """
    if not systems:
        raise ValueError("no systems to evaluate; pass at least one")
    k_list = sorted({int(k) for k in k_list})
    if k_list[0] < 1:
        raise ValueError(f"k values must be >= 1, got {k_list}")
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        raise ValueError(f"system names must be unique, got {names}")
    only = only or {}
    unknown = sorted(set(only) - set(names))
    if unknown:
        raise ValueError(f"`only` names systems that are not evaluated: {unknown}")
    max_k = k_list[-1]
    constraints = user_constraints(dataset_rows, catalogue)
    rows: list[RowResult] = []
    turns: list[TurnResult] = []
    for system in systems:
        _seed_everything(seed)
        wanted = set(only[system.name]) if system.name in only else None
        mine = [t for t in dataset_rows if wanted is None or turn_key(t) in wanted]
        for turn in tqdm(mine, desc=system.name, unit="turn", disable=not progress):
            replayed = _replay_turn(system, turn, catalogue, max_k, constraints.get(turn_key(turn)))
            if replayed is not None:
                rows += replayed[0]
                turns.append(replayed[1])
    datasets = list(dict.fromkeys(t.dataset for t in dataset_rows))
    pairs = list(dict.fromkeys((t.system, t.dataset) for t in turns))
    return EvaluationResult(
        k_list=k_list,
        seed=seed,
        systems=[s.describe() for s in systems],
        datasets=[_dataset_summary(d, dataset_rows, catalogue) for d in datasets],
        summaries=[_summarise(s.name, d, rows, turns, k_list) for s in systems for d in datasets if (s.name, d) in pairs],
        common_summaries=_common_summaries(names, datasets, rows, turns, k_list) if only else [],
        rows=rows,
        turns=turns,
    )


def _common_summaries(
    systems: Sequence[str], datasets: Sequence[str], rows: Sequence[RowResult], turns: Sequence[TurnResult],
    k_list: Sequence[int],
) -> list[SystemSummary]:
    """Every system summarised on the turns of each dataset that all systems replayed (where that is fewer)."""
    summaries = []
    for dataset in datasets:
        seen: dict[str, set[TurnKey]] = {
            s: {turn_key(t) for t in turns if t.system == s and t.dataset == dataset}
            for s in systems
        }
        if not all(seen.values()):
            continue
        common = set.intersection(*seen.values())
        if all(len(keys) == len(common) for keys in seen.values()):
            continue
        mine_rows = [r for r in rows if turn_key(r) in common]
        mine_turns = [t for t in turns if turn_key(t) in common]
        summaries += [_summarise(s, dataset, mine_rows, mine_turns, k_list) for s in systems]
    return summaries


def user_constraints(turns: Sequence[EvalTurn], catalogue: Catalogue) -> dict[TurnKey, DialogueState]:
    """The dialogue state of each turn whose user messages so far state a hard constraint."""
    linker = TitleLinker(catalogue)
    states = {}
    for turn in turns:
        state = read_history([(u.role, u.text) for u in turn.context], linker, catalogue)
        if has_constraints(state):
            states[turn_key(turn)] = state
    return states


def _replay_turn(
    system: System, turn: EvalTurn, catalogue: Catalogue, max_k: int, constraints: DialogueState | None
) -> tuple[list[RowResult], TurnResult] | None:
    """The turn's rows and figures for `system`; None when the system does not answer such turns."""
    context = SystemContext(
        dialogue_id=turn.dialogue_id, turn_id=turn.turn_id, utterances=turn.context, recorded=turn.recorded
    )
    if not system.supports(context):
        return None
    started = time.perf_counter()
    failure = None
    try:
        output = system.recommend(context, max_k + len(turn.mentioned))
        ids, reply_names, unresolved = list(dict.fromkeys(output.item_ids)), output.named_titles, output.unresolved_titles
    except SystemFailure as exc:
        output, ids, reply_names, unresolved, failure = None, [], [], [], str(exc)
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    latency = output.latency_ms if output is not None and output.latency_ms is not None else elapsed_ms
    known = [i for i in ids if i in catalogue]
    kept = known[:max_k]
    excluded = without_mentioned(known, turn.mentioned)[:max_k]
    mentioned = set(turn.mentioned)
    row_results = [
        RowResult(
            system=system.name, dataset=turn.dataset, dialogue_id=turn.dialogue_id, turn_id=turn.turn_id,
            target=target, condition="dis" if target in mentioned else "rec",
            rank_kept=rank_of(kept, target), rank_excluded=rank_of(excluded, target),
        )
        for target in turn.targets
        if target in catalogue
    ]
    turn_result = TurnResult(
        system=system.name, dataset=turn.dataset, dialogue_id=turn.dialogue_id, turn_id=turn.turn_id,
        returned=len(known), out_of_catalogue_ids=len(ids) - len(known), latency_ms=latency,
        repeat_share=repeat_share(known, mentioned, REPEAT_K), named_titles=len(reply_names),
        constraint_violations=None if constraints is None else sum(
            not passes_constraints(catalogue[i], constraints) for i in known[:REPEAT_K]
        ),
        unresolved_titles=len(unresolved), failure=failure,
    )
    return row_results, turn_result


def condition_metrics(
    rows: Sequence[RowResult], mode: Literal["seen_excluded", "seen_kept"], k_list: Sequence[int]
) -> ConditionMetrics:
    """Recall/NDCG/MRR@k (mean and standard error) over `rows`, ranks taken from `mode`."""
    ranks = [r.rank_excluded if mode == "seen_excluded" else r.rank_kept for r in rows]
    values = {
        f"{name}@{k}": mean_stderr([fn(rank, k) for rank in ranks]) for name, fn in METRICS.items() for k in k_list
    }
    return ConditionMetrics(n=len(rows), values=values)


def _summarise(
    system: str, dataset: str, rows: Sequence[RowResult], turns: Sequence[TurnResult], k_list: Sequence[int]
) -> SystemSummary:
    mine = [r for r in rows if r.system == system and r.dataset == dataset]
    by_condition: dict[str, list[RowResult]] = defaultdict(list)
    for r in mine:
        by_condition[r.condition].append(r)
    by_condition["all"] = mine
    metrics = {
        mode: {c: condition_metrics(by_condition[c], mode, k_list) for c in CONDITIONS} for mode in MODES
    }
    my_turns = [t for t in turns if t.system == system and t.dataset == dataset]
    latencies = [t.latency_ms for t in my_turns if t.failure is None]
    named = sum(t.named_titles for t in my_turns)
    unresolved = sum(t.unresolved_titles for t in my_turns)
    return SystemSummary(
        system=system,
        dataset=dataset,
        metrics=metrics,
        turns=len(my_turns),
        failed_turns=sum(t.failure is not None for t in my_turns),
        latency_p50_ms=percentile(latencies, 50),
        latency_p95_ms=percentile(latencies, 95),
        repeat_share=mean_stderr([t.repeat_share for t in my_turns if t.repeat_share is not None]),
        constrained_turns=sum(t.constraint_violations is not None for t in my_turns),
        constraint_violations=sum(t.constraint_violations or 0 for t in my_turns),
        named_titles=named,
        unresolved_titles=unresolved,
        out_of_catalogue_name_share=share(unresolved, named),
        out_of_catalogue_ids=sum(t.out_of_catalogue_ids for t in my_turns),
    )


def _dataset_summary(name: str, turns: Sequence[EvalTurn], catalogue: Catalogue) -> DatasetSummary:
    mine = [t for t in turns if t.dataset == name]
    covered = [(target, t) for t in mine for target in t.targets if target in catalogue]
    total = sum(len(t.targets) + len(t.unmatched_targets) for t in mine)
    dis = sum(target in set(t.mentioned) for target, t in covered)
    return DatasetSummary(
        name=name,
        turns=len(mine),
        turns_with_targets=sum(any(x in catalogue for x in t.targets) for t in mine),
        rows=len(covered),
        rows_rec=len(covered) - dis,
        rows_dis=dis,
        targets=total,
        coverage=len(covered) / total if total else 0.0,
    )


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)
