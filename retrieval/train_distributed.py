"""Data-parallel retrieval training: one replica per process (DDP; gloo on CPU, NCCL on GPU), rank 0 evaluates.

    torchrun --nproc_per_node 2 -m retrieval.train_distributed --dataset ml-latest-small \\
        --data-path ../shared/data/ml-latest-small --set loss=warp --set num_negatives=64 --out runs/warp

`--device` (default auto: cuda when available) places each replica: on CUDA, replica LOCAL_RANK trains on
cuda:LOCAL_RANK (`torchrun --nproc_per_node <gpus>`), its gradients all-reduced over NCCL.

Every replica runs the same seed and trains on its shard of each batch's users; DDP averages the gradients,
rescaled so that the update equals the single-process one (`retrieval.distributed`), so the result matches
`train_retrieval` within floating-point noise. Without torchrun (no WORLD_SIZE in the environment) it trains in
one process. `--init-method file:///path` rendezvouses through a file instead of torchrun's TCP store.
Rank 0 loads (downloads) the data set before the others read it.
Rank 0 writes, atomically, `<out>/metrics.json` (test and popularity metrics, best epoch, history, config,
world size) and the recommender to `<out>/recommender/` (`TwoTowerRecommender.load` reads it).
`--checkpoint-dir DIR` checkpoints every epoch there (rank 0 writes) and resumes from a checkpoint found there.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from retrieval.config import RetrievalConfig
from retrieval.data import load_movielens
from retrieval.distributed import main_first, process_group, torchrun_replica
from retrieval.errors import RetrievalError
from retrieval.storage import write_atomic
from retrieval.train import RetrievalTrainResult, train_retrieval


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = parse_overrides(args.set)
    except (ValueError, ValidationError) as exc:
        print(f"error: --set: {_first_line(exc)}", file=sys.stderr)
        return 2
    try:
        device, world, rank = torchrun_replica(args.device, args.threads)
    except ValueError as exc:
        print(f"error: --device: {exc}", file=sys.stderr)
        return 2
    path = Path(args.data_path) if args.data_path else None
    try:
        with process_group(device, world, rank, args.init_method) as replicas:
            data = main_first(replicas, lambda: load_movielens(args.dataset, path=path))
            checkpoints = Path(args.checkpoint_dir) if args.checkpoint_dir else None
            result = train_retrieval(
                data, config, progress=args.progress, replicas=replicas, checkpoint_dir=checkpoints, resume=True,
                device=device,
            )
            if replicas.is_main:
                save_result(result, Path(args.out), replicas.world)
                print(json.dumps({name: str(value) for name, value in result.metrics.items()}, ensure_ascii=False))
    except RetrievalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def parse_overrides(pairs: Sequence[str]) -> RetrievalConfig:
    """`RetrievalConfig` from `field=value` strings; values are JSON where they parse (64, 0.1, null, [20, 50])."""
    fields: dict[str, object] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"expected field=value, got {pair!r}")
        try:
            fields[name.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            fields[name.strip()] = raw
    return RetrievalConfig(**fields)


def save_result(result: RetrievalTrainResult, out: Path, world: int) -> None:
    """`out/metrics.json` and `out/recommender/`, each written atomically."""
    report = {
        "world_size": world,
        "best_epoch": result.best_epoch,
        "metrics": {name: value.model_dump() for name, value in result.metrics.items()},
        "popularity_metrics": {name: value.model_dump() for name, value in result.popularity_metrics.items()},
        "history": [record.model_dump() for record in result.history],
        "config": result.recommender.config.model_dump(mode="json"),
    }
    result.recommender.save(out / "recommender")
    write_atomic(out / "metrics.json", json.dumps(report, indent=1).encode())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-latest-small", help="MovieLens name (see retrieval.data)")
    parser.add_argument("--data-path", help="a GroupLens folder of that data set (else cache / download)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="a RetrievalConfig field")
    parser.add_argument("--out", required=True, help="folder for metrics.json and recommender/ (rank 0 writes)")
    parser.add_argument("--checkpoint-dir", help="checkpoint every epoch here and resume from one found here")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    parser.add_argument("--init-method", default="env://", help="torch.distributed rendezvous (default: torchrun's)")
    parser.add_argument("--threads", type=int, help="torch threads per replica (default: CPUs / replicas)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=False)
    return parser


def _first_line(exc: Exception) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:3]) if lines else type(exc).__name__


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    raise SystemExit(main())
