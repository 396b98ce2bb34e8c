"""Training-checkpoint files: tensors and pydantic JSON metadata in one safetensors file, written atomically.

Shared by retrieval's epoch checkpoints (`retrieval.checkpoint`) and the ILM's step checkpoints
(`ilm_model.train_checkpoint`). Nothing is unpickled: a hostile file can at worst be refused. Every refusal is a
`CheckpointError` of one line naming the file, what is wrong and the fix.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors

from retrieval.errors import CheckpointError
from retrieval.storage import write_atomic

FIX = "delete it to train from scratch"
GLOBAL_RNG = "rng.torch_global"


class RunKey(BaseModel):
    """What a checkpoint must match to be resumed: the config (JSON; nested sections allowed) and a data hash."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    config: dict[str, Any]
    data: str = Field(description="Short hash of the training data.")

    def check(self, path: Path, current: RunKey) -> None:
        """CheckpointError naming every config field (dotted path) that differs, or the data hash."""
        if self.data != current.data:
            raise CheckpointError(
                f"{path} was written for other data (data hash {self.data}, now {current.data}); {FIX} "
                "or point at the data it was trained on"
            )
        saved, now = _flatten(self.config), _flatten(current.config)
        differ = [
            f"{name} {saved.get(name)!r} -> {now.get(name)!r}"
            for name in sorted(set(saved) | set(now))
            if saved.get(name) != now.get(name)
        ]
        if differ:
            raise CheckpointError(f"{path} was written with another config ({', '.join(differ)}); {FIX}")


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in config.items():
        if isinstance(value, Mapping):
            flat |= _flatten(value, f"{prefix}{name}.")
        else:
            flat[f"{prefix}{name}"] = value
    return flat


class CheckpointHeader(BaseModel):
    """Base of a checkpoint's JSON metadata; subclasses name their header key and format version."""

    model_config = ConfigDict(extra="forbid")

    META_KEY: ClassVar[str]
    FORMAT_VERSION: ClassVar[int]

    format_version: int
    run: RunKey


Header = TypeVar("Header", bound=CheckpointHeader)


def write_checkpoint(path: Path, tensors: Mapping[str, torch.Tensor], header: CheckpointHeader) -> Path:
    """Write `tensors` and `header` to `path` atomically: readers see the old file or this one. Tensors are
    written from CPU copies, so a checkpoint of a GPU run loads anywhere (`load_state_dict` and the optimizer's
    `load_state_dict` move them back to their parameters' device)."""
    tensors = {name: t.detach().cpu() for name, t in tensors.items()}
    owners = Counter(t.untyped_storage().data_ptr() for t in tensors.values())
    # safetensors refuses views and tensors sharing storage (tied weights); copying only those saves a full
    # copy of a 370 MB checkpoint
    tensors = {
        name: t if _owns_storage(t) and owners[t.untyped_storage().data_ptr()] == 1 else t.clone().contiguous()
        for name, t in tensors.items()
    }
    write_atomic(Path(path), save_safetensors(tensors, metadata={header.META_KEY: header.model_dump_json()}))
    return Path(path)


def _owns_storage(tensor: torch.Tensor) -> bool:
    storage = tensor.untyped_storage()
    return tensor.is_contiguous() and tensor.storage_offset() == 0 and storage.nbytes() == tensor.nbytes


def read_checkpoint(path: Path, header_type: type[Header], run: RunKey) -> tuple[Header, dict[str, torch.Tensor]]:
    """The header and tensors of `path`; CheckpointError when it is unreadable, truncated, not of `header_type`,
    of another format version, or written for another run."""
    try:
        with safe_open(str(path), framework="pt") as file:
            raw = (file.metadata() or {}).get(header_type.META_KEY)
            tensors = {name: file.get_tensor(name) for name in file.keys()}
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"{path}: unreadable or truncated ({exc}); {FIX}") from None
    if raw is None:
        kind = header_type.META_KEY.removeprefix("ilmrec_").replace("_", " ")
        raise CheckpointError(f"{path}: not a {kind} (no {header_type.META_KEY} metadata); {FIX}")
    try:
        header = header_type.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "metadata"
        raise CheckpointError(f"{path}: metadata invalid at {where}: {first['msg']}; {FIX}") from None
    if header.format_version != header_type.FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format {header.format_version}, this version reads {header_type.FORMAT_VERSION}; {FIX}"
        )
    header.run.check(path, run)
    return header, tensors


def section(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors whose names start with `prefix`, named without it."""
    return {name.removeprefix(prefix): t for name, t in tensors.items() if name.startswith(prefix)}


def check_fits(path: Path, label: str, state: Mapping[str, torch.Tensor], module: torch.nn.Module) -> None:
    """CheckpointError listing the (name, shape) pairs where `state` and `module.state_dict()` differ."""
    expected = {name: tuple(t.shape) for name, t in module.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in state.items()}
    if found != expected:
        wrong = sorted(set(found.items()) ^ set(expected.items()))
        raise CheckpointError(f"{path}: {label} tensors {wrong} do not fit the model; {FIX}")


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """(`optimizer.<param index>.<key>` tensors, JSON param groups) of `optimizer.state_dict()`."""
    state = optimizer.state_dict()
    tensors = {
        f"optimizer.{param}.{key}": value for param, entries in state["state"].items() for key, value in entries.items()
    }
    return tensors, state["param_groups"]


def restore_optimizer(
    path: Path, tensors: Mapping[str, torch.Tensor], optimizer: torch.optim.Optimizer, groups: list[dict[str, Any]]
) -> None:
    """Load the state `optimizer_tensors` wrote into `optimizer`, refusing tensors that do not fit its parameters.

    Parameters that never had a gradient have no state (e.g. a head whose loss is switched off); every parameter
    with state must have the same entries.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    saved_ids = [i for group in groups for i in group.get("params", [])]
    if saved_ids != list(range(len(params))):
        raise CheckpointError(f"{path}: optimizer holds parameters {saved_ids}, the model has {len(params)}; {FIX}")
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in section(tensors, "optimizer.").items():
        param, _, key = name.partition(".")
        if not param.isdigit() or int(param) >= len(params):
            raise CheckpointError(f"{path}: optimizer tensor {name!r} names no parameter; {FIX}")
        shape = tuple(params[int(param)].shape)
        if tensor.dim() and tuple(tensor.shape) != shape:
            raise CheckpointError(
                f"{path}: optimizer.{name} has shape {tuple(tensor.shape)}, its parameter {shape}; {FIX}"
            )
        state.setdefault(int(param), {})[key] = tensor
    if len({frozenset(s) for s in state.values()}) > 1:
        raise CheckpointError(f"{path}: optimizer state is incomplete (parameters {sorted(state)}); {FIX}")
    # JSON turned tuples (Adam's betas) into lists; give them back their type
    restored = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()} for g in groups]
    optimizer.load_state_dict({"state": state, "param_groups": restored})


def rng_tensors(generators: Mapping[str, torch.Generator]) -> dict[str, torch.Tensor]:
    """`rng.torch_global` (torch's default generator: dropout, init) and `rng.<name>` per named generator."""
    return {GLOBAL_RNG: torch.get_rng_state()} | {f"rng.{name}": g.get_state() for name, g in generators.items()}


def restore_rng(
    path: Path,
    tensors: Mapping[str, torch.Tensor],
    generators: Mapping[str, torch.Generator],
    numpy_states: Sequence[tuple[np.random.Generator, dict[str, Any]]] = (),
) -> None:
    """Set torch's default generator, each named generator and each numpy generator to its saved state."""
    try:
        for name, generator in generators.items():
            generator.set_state(tensors[f"rng.{name}"])
        torch.set_rng_state(tensors[GLOBAL_RNG])
        for rng, saved in numpy_states:
            rng.bit_generator.state = saved
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: random generator state missing or invalid ({exc}); {FIX}") from None
