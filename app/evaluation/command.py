"""`ilmrec eval`: import the conversations, build the requested systems, replay, report.

The CLI registers the flags with `options.add_arguments(parser)`, turns them into `EvalOptions.from_args(args)` and
calls `evaluate_command(options, load_data, load_artefacts, build_service)`. The loaders are only called
when a requested system needs them: `popularity`, `endpoint` and `logged` need just the MovieLens data;
`retrieval`, `fusion`, `text-llm` and `dialogue` need the trained artefacts (`app.pipeline.prepare`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import yaml
from pydantic import BaseModel
from rich.console import Console

from app.evaluation.importers import EvalTurn, ImportedDataset, import_crs, import_session_log, popularity_counts
from app.evaluation.options import LLM_SYSTEMS, NEEDS_ARTEFACTS, EvalOptions
from app.evaluation.replay import EvaluationResult, TurnKey, run_evaluation, turn_key
from app.evaluation.report import format_table, write_report
from app.evaluation.systems import (
    DialogueConfig,
    DialogueSystem,
    EndpointSystem,
    FusionConfig,
    FusionSystem,
    LoggedSystem,
    PopularitySystem,
    RetrievalConfig,
    RetrievalSystem,
    System,
    TextLLMConfig,
    TextLLMSystem,
)
from app.paths import existing_file
from retrieval.catalogue import Catalogue
from retrieval.data import MovieLensData
from retrieval.errors import DataError
from retrieval.recommender import PopularityRecommender
from retrieval.storage import write_atomic
from serving.linking import TitleLinker

if TYPE_CHECKING:
    from app.pipeline import Artefacts
    from serving.service import ChatService

log = logging.getLogger(__name__)

SYSTEM_CONFIGS: dict[str, type[BaseModel]] = {
    "retrieval": RetrievalConfig,
    "fusion": FusionConfig,
    "text-llm": TextLLMConfig,
    "dialogue": DialogueConfig,
}
"""The systems `--system-config` can configure, and their settings models."""

def evaluate_command(
    options: EvalOptions,
    load_data: Callable[[], MovieLensData],
    load_artefacts: Callable[[], Artefacts],
    build_service: Callable[[Artefacts], ChatService],
    console: Console | None = None,
) -> EvaluationResult:
    """Run the evaluation `options` describe, write the report into `options.out`, print the table."""
    console = console or Console()
    data = load_data()
    catalogue = data.catalogue
    counts = popularity_counts(catalogue, data.ratings["item_id"].to_numpy())
    notes: list[str] = [f"Catalogue: {data.name} ({len(catalogue)} movies, read from {data.source})."]
    datasets = _import(options, catalogue, counts, notes)
    selected = {dataset.name: _select(dataset, options, notes) for dataset in datasets}
    turns = [turn for chosen in selected.values() for turn in chosen]
    systems = _build_systems(options, catalogue, counts, load_artefacts, build_service, notes)
    only = _llm_sample(selected, options, [s.name for s in systems], notes)
    result = run_evaluation(turns, systems, catalogue, options.k_list, options.seed, options.progress, only=only)
    result = result.model_copy(
        update={
            "linking": [d.linking for d in datasets if d.linking is not None],
            "malformed": {d.source: d.malformed for d in datasets if d.malformed},
            "notes": notes,
        }
    )
    files = write_report(result, options.out)
    console.print(format_table(result))
    console.print(f"report: {files.markdown} (also {files.html.name}, {files.json_path.name})")
    return result


def _import(options: EvalOptions, catalogue: Catalogue, counts: np.ndarray, notes: list[str]) -> list[ImportedDataset]:
    datasets = []
    for name, path in (("redial", options.redial), ("inspired", options.inspired)):
        if path is None:
            continue
        imported = import_crs(name, existing_file(path, f"--{name}"), catalogue, counts)
        mapping_path = Path(options.out) / f"entity_mapping_{name}.json"
        write_atomic(mapping_path, imported.mapping.model_dump_json(indent=1).encode())
        stats = imported.mapping.stats
        log.info("%s: %d of %d target occurrences linked (%.1f%%); mapping in %s", name,
                 stats.target_occurrences_linked, stats.target_occurrences, 100 * stats.match_rate, mapping_path)
        datasets.append(imported.dataset)
    if options.log is not None:
        datasets.append(import_session_log(existing_file(options.log, "--log"), catalogue))
    return datasets


def _select(dataset: ImportedDataset, options: EvalOptions, notes: list[str]) -> list[EvalTurn]:
    """Turns to replay: CRS turns need a target in the catalogue (others add no rows); then the seeded sample."""
    turns = dataset.turns
    if dataset.linking is not None:
        scorable = [t for t in turns if t.targets]
        if len(scorable) < len(turns):
            notes.append(
                f"{dataset.name}: {len(turns) - len(scorable)} of {len(turns)} turns have no target in the catalogue "
                "and were not replayed."
            )
        turns = scorable
    if options.limit is not None and options.limit < len(turns):
        notes.append(f"{dataset.name}: a random sample of {options.limit} of {len(turns)} turns (seed {options.seed}).")
        turns = _sample(turns, options.limit, options.seed)
    if not turns:
        raise DataError(f"{dataset.source}: no turns to evaluate")
    return turns


def _sample(turns: list[EvalTurn], n: int, seed: int) -> list[EvalTurn]:
    """n of `turns` drawn without replacement by a generator seeded with `seed`, in their original order."""
    if n >= len(turns):
        return turns
    chosen = np.sort(np.random.default_rng(seed).choice(len(turns), n, replace=False))
    return [turns[i] for i in chosen]


def _llm_sample(
    selected: dict[str, list[EvalTurn]], options: EvalOptions, systems: list[str], notes: list[str]
) -> dict[str, set[TurnKey]]:
    """With `--llm-limit N`: the turns each LLM system replays (a seeded sample of N per dataset)."""
    slow = [s for s in systems if s in LLM_SYSTEMS]
    if options.llm_limit is None or not slow:
        return {}
    keys: set[TurnKey] = set()
    for name, turns in selected.items():
        sample = _sample(turns, options.llm_limit, options.seed)
        keys |= {turn_key(t) for t in sample}
        if len(sample) < len(turns):
            notes.append(
                f"{name}: {', '.join(slow)} replayed a random sample of {len(sample)} of {len(turns)} turns "
                f"(seed {options.seed}); the other systems replayed all {len(turns)}."
            )
    return {s: keys for s in slow}


def load_system_configs(path: Path | None) -> dict[str, BaseModel]:
    """`--system-config FILE` (YAML or JSON: system name -> settings) as validated settings models."""
    if path is None:
        return {}
    raw = yaml.safe_load(existing_file(path, "--system-config").read_text()) or {}
    if not isinstance(raw, dict):
        raise DataError(f"--system-config {path}: expected a mapping of system names to settings")
    unknown = sorted(set(raw) - set(SYSTEM_CONFIGS))
    if unknown:
        raise DataError(f"--system-config {path}: no settings for {unknown}; configurable: {', '.join(SYSTEM_CONFIGS)}")
    return {name: SYSTEM_CONFIGS[name].model_validate(values or {}) for name, values in raw.items()}


def _build_systems(
    options: EvalOptions,
    catalogue: Catalogue,
    counts: np.ndarray,
    load_artefacts: Callable[[], Artefacts],
    build_service: Callable[[Artefacts], ChatService],
    notes: list[str],
) -> list[System]:
    configs = load_system_configs(options.system_config)
    artefacts = load_artefacts() if NEEDS_ARTEFACTS & set(options.systems) else None
    if artefacts is not None and not np.array_equal(artefacts.catalogue.ids, catalogue.ids):
        raise DataError("the trained artefacts were built on a different catalogue than the data loaded for eval")
    linker = TitleLinker(catalogue, counts)
    built: dict[str, System] = {}
    retrieval = RetrievalSystem(artefacts.recommender, configs.get("retrieval")) if artefacts is not None else None
    for name in options.systems:
        if name == "popularity":
            built[name] = PopularitySystem(PopularityRecommender(catalogue, counts))
            notes.append("popularity: ranks by number of MovieLens ratings.")
        elif name == "retrieval":
            built[name] = retrieval
        elif name == "fusion":
            config = configs.get("fusion") or FusionConfig()
            built[name] = FusionSystem(artefacts.recommender, artefacts.ilm, config)
            if "fusion" not in configs:
                notes.append("fusion: CF and ITC weights are untuned defaults (1:1 on standardised scores).")
        elif name == "text-llm":
            from serving.engines.transformers import TransformersEngine

            engine = TransformersEngine(artefacts.llm, artefacts.tokenizer)
            built[name] = TextLLMSystem(engine, retrieval, catalogue, linker, configs.get("text-llm"), seed=options.seed)
        elif name == "dialogue":
            built[name] = DialogueSystem(build_service(artefacts), configs.get("dialogue"), seed=options.seed)
        elif name == "endpoint":
            built[name] = EndpointSystem(options.endpoint, linker, model=options.endpoint_model, seed=options.seed)
        elif name == "logged":
            built[name] = LoggedSystem(linker)
    return [built[name] for name in options.systems]

