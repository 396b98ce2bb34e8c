"""Data-parallel ILM training (phase 1 and phase 2): one replica per process (gloo on CPU, NCCL on GPU), rank 0
evaluates and saves.

    torchrun --nproc_per_node 2 -m ilm_model.train_distributed --dataset ml-latest-small \\
        --data-path ../shared/data/ml-latest-small --recommender runs/warp/recommender --out runs/ilm

The CF item vectors come from a saved two-tower recommender (`retrieval.train_distributed`'s
`<out>/recommender/`) of the same data set, whose positives (ratings above its threshold) give the histories
behind IIC and phase 2's recommendation tasks. `--config FILE` is an `ILMConfig` as JSON (default: the
defaults); `--llm` any Hugging Face causal chat LM id or folder, or `bundled`; `--llm-dtype bfloat16` halves
a big LLM's memory on a GPU. `--device` (default auto: cuda when available) places each replica: under
`torchrun --nproc_per_node <gpus>` replica LOCAL_RANK trains on cuda:LOCAL_RANK, gradients over NCCL.

Every replica runs the same seed and trains on its shard of each batch; the gradients are averaged so that
each step equals the single-process one up to float noise (`ilm_model.distributed`), dropout aside: each
replica draws its own masks (after a resume, from rank 0's saved stream). The frozen LLM runs unwrapped on
every replica. Without torchrun (no WORLD_SIZE in the environment) it trains in one process; `--init-method
file:///path` rendezvouses through a file instead of torchrun's TCP store. Rank 0 downloads the data set and
converts the bundled LLM before the others read them, and alone writes: `ILMTrainResult.save`'s files to
`--out` (each atomically; metrics.json also records the world size) and, with `--checkpoint-dir`, the step
checkpoints that every replica resumes from.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

import torch
from pydantic import ValidationError

from ilm_model.configuration import ILMConfig, LLMDType
from ilm_model.errors import ILMError
from ilm_model.interactions import Interactions
from ilm_model.llm_loading import BUNDLED, load_frozen_llm
from ilm_model.train import ILMTrainResult, train_ilm
from retrieval.data import DEFAULT_CACHE_DIR, implicit_positives, load_movielens
from retrieval.distributed import Replicas, main_first, process_group, torchrun_replica
from retrieval.errors import RetrievalError
from retrieval.recommender import TwoTowerRecommender


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = ILMConfig.model_validate_json(Path(args.config).read_text()) if args.config else ILMConfig()
    except ValidationError as exc:
        first = exc.errors()[0]
        print(f"error: --config: {'.'.join(map(str, first['loc']))}: {first['msg']}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: --config: {exc}", file=sys.stderr)
        return 2
    try:
        device, world, rank = torchrun_replica(args.device, args.threads)
    except ValueError as exc:
        print(f"error: --device: {exc}", file=sys.stderr)
        return 2
    try:
        with process_group(device, world, rank, args.init_method) as replicas:
            result = train(args, config, replicas, device)
            if replicas.is_main:
                result.metrics["world_size"] = replicas.world
                result.save(Path(args.out))
                print(json.dumps({name: round(value, 4) for name, value in result.metrics.items()}))
    except (ILMError, RetrievalError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def train(args: argparse.Namespace, config: ILMConfig, replicas: Replicas, device: torch.device) -> ILMTrainResult:
    """Load the data, CF vectors and frozen LLM named by `args`, then `train_ilm` as replica `replicas` on
    `device`."""
    path = Path(args.data_path) if args.data_path else None
    data = main_first(replicas, lambda: load_movielens(args.dataset, path=path))
    recommender = TwoTowerRecommender.load(Path(args.recommender), data.catalogue)
    positives = implicit_positives(data.ratings, recommender.config.positive_threshold)
    interactions = Interactions.from_positives(positives, data.catalogue)
    llm, tokenizer = main_first(
        replicas, lambda: load_frozen_llm(args.llm, Path(args.cache), args.llm_dtype, device)
    )
    return train_ilm(
        data.catalogue, recommender.item_embeddings(), llm, tokenizer, config, args.progress, interactions,
        checkpoint_dir=Path(args.checkpoint_dir) if args.checkpoint_dir else None, resume=True,
        checkpoint_every=args.checkpoint_every, replicas=replicas, device=device,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-latest-small", help="MovieLens name (see retrieval.data)")
    parser.add_argument("--data-path", help="a GroupLens folder of that data set (else cache / download)")
    parser.add_argument("--recommender", required=True, help="a saved TwoTowerRecommender folder (the CF vectors)")
    parser.add_argument("--llm", default=BUNDLED, help="frozen chat LLM: 'bundled', a Hugging Face id or a folder")
    parser.add_argument("--cache", default=str(DEFAULT_CACHE_DIR), help="where the bundled LLM is converted")
    parser.add_argument("--config", help="an ILMConfig as JSON (default: the defaults)")
    parser.add_argument("--out", required=True, help="folder for the trained ILM (rank 0 writes)")
    parser.add_argument("--checkpoint-dir", help="checkpoint here every --checkpoint-every steps; resume from it")
    parser.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints")
    parser.add_argument("--llm-dtype", default="float32", choices=get_args(LLMDType), help="frozen LLM weights")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    parser.add_argument("--init-method", default="env://", help="torch.distributed rendezvous (default: torchrun's)")
    parser.add_argument("--threads", type=int, help="torch threads per replica (default: CPUs / replicas)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=False)
    return parser


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    raise SystemExit(main())
