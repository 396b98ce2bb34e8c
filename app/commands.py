"""What each `ilmrec` subcommand does, given parsed flags and settings overrides."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from app.paths import inside
from app.pipeline import Artefacts, load_data, load_trained, prepare, prepare_retrieval
from app.settings import Settings, load_settings
from retrieval.data import MovieLensData

log = logging.getLogger(__name__)
out = Console()


def run_command(command: str, args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    settings = load_settings(args.config, **overrides)
    if command == "config":
        out.print_json(settings.masked_json())
        return 0
    if command == "eval":
        return _evaluate(settings, args)
    if command == "data":
        print_data_stats(load_data(settings))
        return 0
    if command == "train" and args.stage == "retrieval":
        stage = prepare_retrieval(settings)
        print_metrics(stage.metrics, stage.directory)
        return 0
    artefacts = prepare(settings)
    print_metrics(artefacts.metrics, artefacts.directory)
    if command == "train":
        return 0
    if command == "chat":
        from app.terminal_chat import chat_loop

        return chat_loop(build_service(settings, artefacts))
    from app.server import PARTS, serve

    return serve(settings, build_service(settings, artefacts), getattr(args, "parts", None) or PARTS)


def _evaluate(settings: Settings, args: argparse.Namespace) -> int:
    from app.evaluation.command import evaluate_command
    from app.evaluation.options import NEEDS_ILM, EvalOptions

    options = EvalOptions.from_args(args)
    evaluate_command(
        options,
        load_data=lambda: load_data(settings),
        load_artefacts=lambda: (
            load_trained(options.artefacts, settings, need_ilm=bool(NEEDS_ILM & set(options.systems)))
            if options.artefacts else prepare(settings)
        ),
        build_service=lambda artefacts: build_service(settings, artefacts),
    )
    return 0


def build_service(settings: Settings, artefacts: Artefacts):  # -> serving.service.ChatService
    from app.conversation_logs import logged_dialogue_statistics
    from ilm_model.llm_loading import BUNDLED, convert_bundled
    from serving.engines import create_engine
    from serving.service import ChatService
    from serving.session_log import SessionLogWriter
    from serving.session_store import open_session_store
    from serving.text_scores import ITCTextScorer

    model_path = convert_bundled(settings.cache) if settings.llm == BUNDLED else settings.llm
    engine = create_engine(settings.serving, artefacts.llm, artefacts.tokenizer, model_path)
    conversation = None
    if settings.conversation_logs:
        conversation = logged_dialogue_statistics(settings.conversation_logs, artefacts.catalogue,
                                                  artefacts.recommender.popularity.counts)
    return ChatService(
        artefacts.catalogue,
        artefacts.recommender,
        artefacts.soft_tokens,
        engine,
        open_session_store(settings.session_store),
        settings.serving,
        conversation=conversation,
        text_scorer=ITCTextScorer(artefacts.ilm, artefacts.recommender),
        session_log=SessionLogWriter(settings.session_log or inside(settings.cache, "logs", "sessions.jsonl")),
        model_id=settings.llm,
        checkpoint_id=artefacts.directory.name,
    )


def print_data_stats(data: MovieLensData) -> None:
    """What was loaded: sizes, sparsity, rating scale, dates and the commonest genres."""
    ratings = data.ratings
    n_users, n_rated = ratings["user_id"].nunique(), ratings["item_id"].nunique()
    dates = pd.to_datetime(ratings["timestamp"], unit="s")
    genres = pd.Series([g for movie in data.catalogue for g in movie.genres]).value_counts()
    table = Table(title=f"MovieLens {data.name}", show_header=False)
    for name, value in (
        ("source", data.source),
        ("users", f"{n_users:,}"),
        ("movies", f"{len(data.catalogue):,} in the catalogue, {n_rated:,} rated"),
        ("ratings", f"{len(ratings):,} ({len(ratings) / (n_users * n_rated):.2%} of users x rated movies)"),
        ("per user", f"median {ratings.groupby('user_id').size().median():.0f}"),
        ("scale", f"{ratings['rating'].min():g} to {ratings['rating'].max():g}, mean {ratings['rating'].mean():.2f}"),
        ("dates", f"{dates.min():%Y-%m-%d} to {dates.max():%Y-%m-%d}"),
        ("genres", ", ".join(f"{g} {n:,}" for g, n in genres.head(6).items())),
    ):
        table.add_row(name, value)
    out.print(table)


def print_metrics(metrics: dict[str, Any], directory: Path) -> None:
    """The held-out quality of what is being served, next to popularity."""
    retrieval = metrics.get("retrieval")
    if retrieval:
        table = Table(title="Retrieval, held-out users, full catalogue")
        table.add_column("model")
        metric_names = list(retrieval["model"])
        for name in metric_names:
            table.add_column(name, justify="right")
        for label, values in (("ilmrec", retrieval["model"]), ("popularity", retrieval["popularity"])):
            table.add_row(label, *(_fmt(values[name]) for name in metric_names))
        out.print(table)
    if metrics.get("ilm"):
        out.print(ilm_table(metrics["ilm"]))
    out.print(f"artefacts: {directory}")


ILM_ROWS = {
    "itc_recall@10_heldout": "text -> item ITC Recall@10, held-out items",
    "itc_recall@10_chance": "the same at chance (10 / items)",
    "title_accuracy_trained": "exact title generated from the soft tokens alone, trained items",
    "title_accuracy_heldout": "the same, held-out items (near 0 for SmolLM2-135M: benchmarks/results/ilm.md)",
    "genre_f1_trained": "genres named from the soft tokens alone (F1), trained items",
    "genre_f1_heldout": "the same, held-out items",
}
"""The ILM metrics `ilmrec train` shows, with what each measures (the rest are counts and timings)."""


def ilm_table(ilm: dict[str, Any]) -> Table:
    """The ILM's held-out metrics, each with what it measures."""
    table = Table(title="ILM (Q-Former item tokens), held-out evaluation")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("what it measures")
    for key, meaning in ILM_ROWS.items():
        if key in ilm:
            table.add_row(key, _fmt(ilm[key]), meaning)
    stages = (("phase 1", "phase1_seconds"), ("phase 2", "phase2_seconds"), ("evaluation", "evaluation_seconds"))
    seconds = [f"{name} {ilm[key]:.0f} s" for name, key in stages if key in ilm]
    if seconds:
        table.caption = "training: " + ", ".join(seconds)
    return table


def _fmt(value: Any) -> str:
    if isinstance(value, dict) and "mean" in value:
        return f"{value['mean']:.4f} ± {value.get('stderr', 0):.4f}"
    return f"{value:.4f}" if isinstance(value, float) else str(value)
