"""Epoch checkpoints of `train_retrieval`: one safetensors file, written atomically, refused when it does not fit.

The file holds every tensor (`model.*`, `best.*` the best-so-far weights, `optimizer.<param>.<key>` Adam's
moments and step, `rng.torch_generator`, `rng.torch_global`) and, in the safetensors header, JSON metadata
(`CheckpointMeta`: epoch, history, early-stopping counters, optimizer hyper-parameters, the numpy bit
generator's state, and the run key). Nothing is unpickled: a hostile file can at worst be refused.

The run key is the config (as JSON) and a hash of the data; resuming under another key raises
`CheckpointError` naming what differs, so a checkpoint never silently continues a different run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from retrieval import checkpoint_io
from retrieval.checkpoint_io import CheckpointHeader
from retrieval.config import RetrievalConfig
from retrieval.data import MovieLensData

CHECKPOINT_FILE = "checkpoint.safetensors"
_META_KEY = "ilmrec_retrieval_checkpoint"


class EpochRecord(BaseModel):
    """One epoch: mean training loss, validation NDCG@k (None when not evaluated), wall seconds so far."""

    model_config = ConfigDict(frozen=True)

    epoch: int
    loss: float
    validation_ndcg: float | None
    seconds: float


class RunKey(checkpoint_io.RunKey):
    """What a checkpoint must match to be resumed: the config and a hash of the ratings and catalogue ids."""

    @classmethod
    def of(cls, config: RetrievalConfig, data: MovieLensData) -> RunKey:
        digest = hashlib.sha256(pd.util.hash_pandas_object(data.ratings, index=False).to_numpy().tobytes())
        digest.update(np.ascontiguousarray(data.catalogue.ids).tobytes())
        return cls(config=config.model_dump(mode="json"), data=digest.hexdigest()[:16])


class Progress(BaseModel):
    """Where training stands after `epoch`: its history and the early-stopping state."""

    model_config = ConfigDict(extra="forbid")

    epoch: int = Field(0, ge=0, description="Last completed epoch (0 before the first).")
    history: list[EpochRecord] = Field(default_factory=list)
    best_ndcg: float = -1.0
    best_epoch: int = 0
    stale: int = Field(0, ge=0, description="Evaluations since the best validation NDCG.")


class CheckpointMeta(CheckpointHeader):
    """The JSON half of a checkpoint (the header metadata of its safetensors file)."""

    META_KEY: ClassVar[str] = _META_KEY
    FORMAT_VERSION: ClassVar[int] = 1

    run: RunKey
    progress: Progress
    optimizer_groups: list[dict[str, Any]]
    numpy_rng: dict[str, Any]


@dataclass
class Trainee:
    """The live objects a checkpoint captures and restores in place."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    rng: np.random.Generator


def save_checkpoint(
    directory: Path, trainee: Trainee, progress: Progress, best_state: dict[str, torch.Tensor], run: RunKey
) -> Path:
    """Write `<directory>/checkpoint.safetensors` atomically (readers see the previous epoch's or this one's)."""
    tensors = {f"model.{name}": t for name, t in trainee.model.state_dict().items()}
    tensors |= {f"best.{name}": t for name, t in best_state.items()}
    optimizer, groups = checkpoint_io.optimizer_tensors(trainee.optimizer)
    tensors |= optimizer | checkpoint_io.rng_tensors({"torch_generator": trainee.generator})
    meta = CheckpointMeta(
        format_version=CheckpointMeta.FORMAT_VERSION,
        run=run,
        progress=progress,
        optimizer_groups=groups,
        numpy_rng=trainee.rng.bit_generator.state,
    )
    return checkpoint_io.write_checkpoint(Path(directory) / CHECKPOINT_FILE, tensors, meta)


@dataclass(frozen=True)
class Resumed:
    """A restored checkpoint: the progress to continue from and the best-so-far weights."""

    progress: Progress
    best_state: dict[str, torch.Tensor]


def load_checkpoint(directory: Path, trainee: Trainee, run: RunKey) -> Resumed | None:
    """Restore `<directory>/checkpoint.safetensors` into `trainee` (weights, Adam state, all RNG states).

    None when there is no checkpoint; CheckpointError (one line, naming the file and the fix) when it is
    unreadable, truncated, from another config or data, or its tensors do not fit the model.
    """
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    meta, tensors = checkpoint_io.read_checkpoint(path, CheckpointMeta, run)
    model_state = checkpoint_io.section(tensors, "model.")
    best_state = checkpoint_io.section(tensors, "best.")
    for label, state in (("model", model_state), ("best", best_state)):
        checkpoint_io.check_fits(path, label, state, trainee.model)
    checkpoint_io.restore_optimizer(path, tensors, trainee.optimizer, meta.optimizer_groups)
    trainee.model.load_state_dict(model_state)
    checkpoint_io.restore_rng(path, tensors, {"torch_generator": trainee.generator}, [(trainee.rng, meta.numpy_rng)])
    return Resumed(meta.progress, best_state)
