"""Step checkpoints of ILM training: one safetensors file, written atomically every N steps, refused when it
does not fit (the file machinery is `retrieval.checkpoint_io`).

Tensors: `model.*` the whole item encoder (the frozen LLM is not saved), `optimizer.<param>.<key>` AdamW's
moments and step, `rng.torch_global` and `rng.generator` (the phase's sampling generator), `sampler.<name>` each
batch sampler's epoch permutation. JSON header (`ILMCheckpointMeta`): phase and completed steps, the history so
far, the metrics `train_ilm` had before the phase (phase 1's results during phase 2), phase 2's describe
targets so far, sampler positions, AdamW's param groups, the learning-rate schedule and the run key.

A phase-2 checkpoint therefore holds phase 1's result: resuming it skips phase 1.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from ilm_model.batching import ShuffledBatches
from ilm_model.configuration import ILMConfig
from ilm_model.errors import CheckpointError
from ilm_model.interactions import Interactions
from ilm_model.item_text import describe
from ilm_model.training_history import TrainingHistory
from retrieval import checkpoint_io
from retrieval.catalogue import Catalogue
from retrieval.checkpoint_io import FIX, CheckpointHeader, RunKey
from retrieval.errors import CheckpointError as FileRefused

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.safetensors"
Phase = Literal["phase1", "phase2"]


class ILMCheckpointMeta(CheckpointHeader):
    """The JSON half of an ILM checkpoint (the header metadata of its safetensors file)."""

    META_KEY: ClassVar[str] = "ilmrec_ilm_checkpoint"
    FORMAT_VERSION: ClassVar[int] = 1

    phase: Phase
    step: int = Field(ge=0, description="Completed optimiser steps of `phase`.")
    history: list[dict[str, float | int | str]]
    metrics: dict[str, float | int] = Field(description="`train_ilm`'s metrics before this phase.")
    seen: list[int] = Field(description="Phase 2: catalogue rows that were a describe target so far.")
    sampler_positions: dict[str, int]
    optimizer_groups: list[dict[str, Any]]
    schedule: dict[str, Any]


def ilm_run_key(
    config: ILMConfig, catalogue: Catalogue, cf: np.ndarray, interactions: Interactions | None, llm_name: str
) -> RunKey:
    """The config (with the LLM's name) and a hash of the item ids and texts, CF vectors and interactions."""
    digest = hashlib.sha256(np.ascontiguousarray(catalogue.ids).tobytes())
    digest.update("\n".join(describe(movie) for movie in catalogue).encode())
    digest.update(np.ascontiguousarray(cf, dtype=np.float32).tobytes())
    if interactions is not None:
        for history in interactions.histories:
            digest.update(np.asarray(history, dtype=np.int64).tobytes() + b"|")
        if interactions.user_embeddings is not None:
            digest.update(np.ascontiguousarray(interactions.user_embeddings, dtype=np.float32).tobytes())
    return RunKey(config={**config.model_dump(mode="json"), "llm": llm_name}, data=digest.hexdigest()[:16])


@dataclass
class PhaseState:
    """The live objects of one phase's loop that a checkpoint captures and restores in place."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    samplers: dict[str, ShuffledBatches]
    seen: set[int] = field(default_factory=set)


@dataclass
class StepCheckpoints:
    """Where and how often (`every` steps, and after a phase's last) a run checkpoints; with `resume`, the
    checkpoint already there (read once, on first use) is what the phases continue from.

    `metrics` is stored with every checkpoint: `train_ilm` puts its metrics so far there before each phase.
    `write=False` (data-parallel replicas other than rank 0) restores but never writes.
    """

    directory: Path
    run: RunKey
    every: int = 50
    resume: bool = True
    metrics: dict[str, float | int] = field(default_factory=dict)
    write: bool = True
    _pending: tuple[ILMCheckpointMeta, dict[str, torch.Tensor]] | None = field(default=None, init=False, repr=False)
    _read: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {self.every}")
        self.directory = Path(self.directory)

    @property
    def path(self) -> Path:
        return self.directory / CHECKPOINT_FILE

    def pending(self) -> ILMCheckpointMeta | None:
        """The header of the checkpoint to resume from; None without `resume`, without a file, or once restored.
        CheckpointError when the file is unreadable, truncated or of another run."""
        if not self._read:
            self._read = True
            if self.resume and self.path.is_file():
                with _refused_as_ilm_error():
                    self._pending = checkpoint_io.read_checkpoint(self.path, ILMCheckpointMeta, self.run)
        return self._pending[0] if self._pending else None

    def restore(self, phase: Phase, state: PhaseState, history: TrainingHistory) -> int:
        """Load the pending checkpoint of `phase` into `state` and `history`; the steps it had completed
        (0 when there is none for this phase)."""
        meta = self.pending()
        if meta is None or meta.phase != phase:
            return 0
        tensors = self._pending[1]
        with _refused_as_ilm_error():
            model_state = checkpoint_io.section(tensors, "model.")
            checkpoint_io.check_fits(self.path, "model", model_state, state.model)
            checkpoint_io.restore_optimizer(self.path, tensors, state.optimizer, meta.optimizer_groups)
            state.model.load_state_dict(model_state)
            _restore_schedule(self.path, state.schedule, meta.schedule)
            _restore_samplers(self.path, tensors, state.samplers, meta.sampler_positions)
            checkpoint_io.restore_rng(self.path, tensors, {"generator": state.generator})
        state.seen = set(meta.seen)
        history.records = [dict(record) for record in meta.history]
        self._pending = None
        logger.info("ILM training resumed at %s step %d (%s)", phase, meta.step, self.directory)
        return meta.step

    def after_step(self, phase: Phase, step: int, steps: int, state: PhaseState, history: TrainingHistory) -> None:
        """Checkpoint after step index `step` (of `steps`) when it completes a multiple of `every` or the phase."""
        done = step + 1
        if not self.write or (done % self.every and done != steps):
            return
        tensors = {f"model.{name}": t for name, t in state.model.state_dict().items()}
        optimizer, groups = checkpoint_io.optimizer_tensors(state.optimizer)
        tensors |= optimizer | checkpoint_io.rng_tensors({"generator": state.generator})
        tensors |= {f"sampler.{name}": sampler.order for name, sampler in state.samplers.items()}
        meta = ILMCheckpointMeta(
            format_version=ILMCheckpointMeta.FORMAT_VERSION,
            run=self.run,
            phase=phase,
            step=done,
            history=history.records,
            metrics=self.metrics,
            seen=sorted(state.seen),
            sampler_positions={name: sampler.position for name, sampler in state.samplers.items()},
            optimizer_groups=groups,
            schedule=state.schedule.state_dict(),
        )
        checkpoint_io.write_checkpoint(self.path, tensors, meta)


def _restore_schedule(
    path: Path, schedule: torch.optim.lr_scheduler.LRScheduler, saved: dict[str, Any]
) -> None:
    expected = schedule.state_dict()
    if set(saved) != set(expected) or len(saved.get("base_lrs", ())) != len(expected["base_lrs"]):
        raise FileRefused(f"{path}: learning-rate schedule state {sorted(saved)} does not fit this run; {FIX}")
    schedule.load_state_dict(saved)


def _restore_samplers(
    path: Path, tensors: dict[str, torch.Tensor], samplers: dict[str, ShuffledBatches], positions: dict[str, int]
) -> None:
    orders = checkpoint_io.section(tensors, "sampler.")
    if set(orders) != set(samplers) or set(positions) != set(samplers):
        raise FileRefused(f"{path}: batch samplers {sorted(orders)}, this run has {sorted(samplers)}; {FIX}")
    for name, sampler in samplers.items():
        try:
            sampler.restore(orders[name], positions[name])
        except ValueError as exc:
            raise FileRefused(f"{path}: batch sampler {name!r}: {exc}; {FIX}") from None


@contextmanager
def _refused_as_ilm_error() -> Iterator[None]:
    """The file machinery raises retrieval's CheckpointError; callers of the ILM tier expect an ILMError."""
    try:
        yield
    except FileRefused as exc:
        raise CheckpointError(str(exc)) from None
