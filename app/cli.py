"""`ilmrec`: train on MovieLens, serve the chat UI and OpenAI-compatible API, chat in the terminal."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler

from app.evaluation.options import add_arguments as add_eval_arguments

console = Console(stderr=True)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """CLI flags as nested settings overrides (only the flags that were given)."""
    nested: dict[str, dict[str, Any]] = {}
    flat = {
        "data_path": ("data", "path"),
        "dataset": ("data", "dataset"),
        "host": ("server", "host"),
        "port": ("server", "port"),
    }
    out: dict[str, Any] = {}
    for name, (section, field) in flat.items():
        value = getattr(args, name, None)
        if value is not None:
            nested.setdefault(section, {})[field] = value
    if args.seed is not None and args.command != "eval":  # eval's --seed seeds the harness, not training
        for section in ("retrieval", "ilm"):
            nested.setdefault(section, {})["seed"] = args.seed
    for name in ("cache_dir", "llm", "conversation_logs"):
        value = getattr(args, name, None)
        if value is not None:
            out[name] = value
    return {**out, **nested}


def _add_common(parser: argparse.ArgumentParser, seed_help: str = "seed of retrieval and ILM training") -> None:
    parser.add_argument("--config", type=Path, help="YAML settings file (env ILMREC_* and flags override it)")
    parser.add_argument("--cache-dir", type=Path, help="downloads, converted models, trained artefacts")
    parser.add_argument("--dataset", help="ml-latest-small (default), ml-100k, ml-1m, ml-20m, ml-25m")
    parser.add_argument("--data-path", type=Path, help="a local MovieLens folder in GroupLens format")
    parser.add_argument("--llm", help="frozen chat LLM: 'bundled' (SmolLM2-135M) or a Hugging Face id or path")
    parser.add_argument("--seed", type=int, help=seed_help)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _add_server(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="bind address (default 127.0.0.1; 0.0.0.0 only inside a container)")
    parser.add_argument("--port", type=int, help="port for the UI (/ui/) and the API (/v1), default 8000")
    _add_conversation_logs(parser)


def _add_conversation_logs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--conversation-logs", type=Path, nargs="+", metavar="JSONL",
                        help="CRSLab-style logged conversations (ReDial/INSPIRED format) the ranking learns what "
                        "people ask for from (the conversation prior)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ilmrec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train what is not cached yet, then serve the UI and API (what `make run` does)")
    _add_common(run)
    _add_server(run)

    serve = sub.add_parser(
        "serve", help="serve the API and/or the UI (trains what is not cached yet, like run)",
        description="Serve the OpenAI-compatible API (/v1), the chat UI (/ui/) or both (default), with /health.",
    )
    _add_common(serve)
    _add_server(serve)
    only = serve.add_mutually_exclusive_group()
    only.add_argument("--api-only", dest="parts", action="store_const", const=("api",),
                      help="serve /v1 and /health, no UI")
    only.add_argument("--ui-only", dest="parts", action="store_const", const=("ui",),
                      help="serve the UI and /health, no /v1")

    data = sub.add_parser(
        "data", help="download (checksum-verified) or read MovieLens and print its statistics",
        description="Load the MovieLens data the settings name (--dataset, --data-path; downloads into --cache-dir "
        "when needed, verifying the archive's SHA-256) and print users, movies, ratings, dates and genres.",
    )
    _add_common(data)

    train = sub.add_parser(
        "train", help="train (or load from cache) retrieval and ILM, print metrics",
        description="Train what is not cached yet and print its held-out metrics. `retrieval` stops after the "
        "retrieval tier; `ilm` (the default) also trains the Item-Language Model on its item embeddings.",
    )
    train.add_argument("stage", nargs="?", choices=("retrieval", "ilm"), default="ilm",
                       help="the last stage to train (default ilm: everything)")
    _add_common(train)

    chat = sub.add_parser("chat", help="chat in the terminal with the trained system")
    _add_common(chat)
    _add_conversation_logs(chat)

    evaluate = sub.add_parser("eval", help="replay logged conversations (ReDial, INSPIRED, our log) and report")
    _add_common(evaluate, seed_help="seeds the turn samples and the systems (the artefacts are trained as configured)")
    add_eval_arguments(evaluate)

    config = sub.add_parser("config", help="settings (`config show` prints the effective ones, secrets masked)")
    config_sub = config.add_subparsers(dest="config_command", metavar="{show}", required=True)
    show = config_sub.add_parser("show", help="print the effective settings, secrets masked")
    _add_common(show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    logging.captureWarnings(True)  # library warnings (e.g. the ML-100K fallback) show once, as log lines
    if not args.verbose:  # faiss reports at INFO which CPU build it could not load, which reads like an error
        logging.getLogger("faiss").setLevel(logging.WARNING)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from app.commands import run_command  # heavy imports (torch, transformers) only after parsing

    try:
        return run_command(args.command, args, _overrides(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns errors into a one-line message
        from app.errors import describe_user_error, is_user_error

        if not is_user_error(exc) or args.verbose:
            raise
        console.print(f"[bold red]error:[/] {describe_user_error(exc)}", markup=True, highlight=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
