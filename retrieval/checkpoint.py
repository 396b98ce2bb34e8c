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
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors

from retrieval.config import RetrievalConfig
from retrieval.data import MovieLensData
from retrieval.errors import CheckpointError
from retrieval.storage import write_atomic

FORMAT_VERSION = 1
CHECKPOINT_FILE = "checkpoint.safetensors"
_META_KEY = "ilmrec_retrieval_checkpoint"


class EpochRecord(BaseModel):
    """One epoch: mean training loss, validation NDCG@k (None when not evaluated), wall seconds so far."""

    model_config = ConfigDict(frozen=True)

    epoch: int
    loss: float
    validation_ndcg: float | None
    seconds: float


class RunKey(BaseModel):
    """What a checkpoint must match to be resumed: the config and a hash of the data."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    config: dict[str, Any]
    data: str = Field(description="sha256 of the ratings (user, item, rating, time) and the catalogue ids.")

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


class CheckpointMeta(BaseModel):
    """The JSON half of a checkpoint (the header metadata of its safetensors file)."""

    model_config = ConfigDict(extra="forbid")

    format_version: int
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
    optimizer = trainee.optimizer.state_dict()
    for param, entries in optimizer["state"].items():
        tensors |= {f"optimizer.{param}.{key}": value for key, value in entries.items()}
    tensors["rng.torch_generator"] = trainee.generator.get_state()
    tensors["rng.torch_global"] = torch.get_rng_state()
    meta = CheckpointMeta(
        format_version=FORMAT_VERSION,
        run=run,
        progress=progress,
        optimizer_groups=optimizer["param_groups"],
        numpy_rng=trainee.rng.bit_generator.state,
    )
    tensors = {name: t.detach().clone().contiguous() for name, t in tensors.items()}
    path = Path(directory) / CHECKPOINT_FILE
    write_atomic(path, save_safetensors(tensors, metadata={_META_KEY: meta.model_dump_json()}))
    return path


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
    meta, tensors = _read(path)
    _check_run(path, meta.run, run)
    model_state = _section(tensors, "model.")
    best_state = _section(tensors, "best.")
    expected = {name: tuple(t.shape) for name, t in trainee.model.state_dict().items()}
    for label, state in (("model", model_state), ("best", best_state)):
        found = {name: tuple(t.shape) for name, t in state.items()}
        if found != expected:
            wrong = sorted(set(found.items()) ^ set(expected.items()))
            raise CheckpointError(f"{path}: {label} tensors {wrong} do not fit the model; {_FIX}")
    optimizer_state = _optimizer_state(path, tensors, trainee.optimizer, meta.optimizer_groups)
    trainee.model.load_state_dict(model_state)
    trainee.optimizer.load_state_dict(optimizer_state)
    _restore_rng(path, tensors, trainee, meta.numpy_rng)
    return Resumed(meta.progress, best_state)


_FIX = "delete it to train from scratch"


def _read(path: Path) -> tuple[CheckpointMeta, dict[str, torch.Tensor]]:
    try:
        with safe_open(str(path), framework="pt") as file:
            raw = (file.metadata() or {}).get(_META_KEY)
            tensors = {name: file.get_tensor(name) for name in file.keys()}
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"{path}: unreadable or truncated ({exc}); {_FIX}") from None
    if raw is None:
        raise CheckpointError(f"{path}: not a retrieval checkpoint (no {_META_KEY} metadata); {_FIX}")
    try:
        meta = CheckpointMeta.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "metadata"
        raise CheckpointError(f"{path}: metadata invalid at {where}: {first['msg']}; {_FIX}") from None
    if meta.format_version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format {meta.format_version}, this version reads {FORMAT_VERSION}; {_FIX}")
    return meta, tensors


def _check_run(path: Path, saved: RunKey, current: RunKey) -> None:
    if saved.data != current.data:
        raise CheckpointError(
            f"{path} was written for other data (data hash {saved.data}, now {current.data}); {_FIX} "
            "or point at the data it was trained on"
        )
    names = sorted(set(saved.config) | set(current.config))
    differ = [
        f"{name} {saved.config.get(name)!r} -> {current.config.get(name)!r}"
        for name in names
        if saved.config.get(name) != current.config.get(name)
    ]
    if differ:
        raise CheckpointError(f"{path} was written with another config ({', '.join(differ)}); {_FIX}")


def _section(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {name.removeprefix(prefix): t for name, t in tensors.items() if name.startswith(prefix)}


def _optimizer_state(
    path: Path, tensors: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, groups: list[dict[str, Any]]
) -> dict[str, Any]:
    """The optimizer's `state_dict` rebuilt from `optimizer.<param>.<key>` tensors and the JSON param groups."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    saved_ids = [i for group in groups for i in group.get("params", [])]
    if saved_ids != list(range(len(params))):
        raise CheckpointError(f"{path}: optimizer holds parameters {saved_ids}, the model has {len(params)}; {_FIX}")
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in _section(tensors, "optimizer.").items():
        param, _, key = name.partition(".")
        if not param.isdigit() or int(param) >= len(params):
            raise CheckpointError(f"{path}: optimizer tensor {name!r} names no parameter; {_FIX}")
        shape = tuple(params[int(param)].shape)
        if tensor.dim() and tuple(tensor.shape) != shape:
            raise CheckpointError(
                f"{path}: optimizer.{name} has shape {tuple(tensor.shape)}, its parameter {shape}; {_FIX}"
            )
        state.setdefault(int(param), {})[key] = tensor
    if state and (set(state) != set(range(len(params))) or len({frozenset(s) for s in state.values()}) > 1):
        raise CheckpointError(f"{path}: optimizer state is incomplete (parameters {sorted(state)}); {_FIX}")
    # JSON turned tuples (Adam's betas) into lists; give them back their type
    restored = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()} for g in groups]
    return {"state": state, "param_groups": restored}


def _restore_rng(path: Path, tensors: dict[str, torch.Tensor], trainee: Trainee, numpy_rng: dict[str, Any]) -> None:
    try:
        trainee.generator.set_state(tensors["rng.torch_generator"])
        torch.set_rng_state(tensors["rng.torch_global"])
        trainee.rng.bit_generator.state = numpy_rng
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: random generator state missing or invalid ({exc}); {_FIX}") from None
