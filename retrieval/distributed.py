"""Data-parallel replicas for `train_retrieval` (DDP; gloo on CPU, NCCL for CUDA tensors): where this process
sits, what it shares, and the process group its launchers (`retrieval.train_distributed`,
`ilm_model.train_distributed`) open.

Every replica runs the same seeded loop (same user permutation, same fold-in masks, same shared negatives) and
keeps only its shard of each batch's users. Its loss is rescaled so that DDP's gradient average equals the
single-process gradient of the whole batch: with l_r = S_r / B_r the mean over its B_r rows,

    grad = (1 / W) sum_r grad(c_r l_r),   c_r = W B_r / B   =>   grad = grad(sum_r S_r / B),

exact for the row-mean losses (lambdarank, warp, softmax), close for bpr (a mean over valid pairs).
The main replica (rank 0) evaluates; the others receive its numbers, so every replica takes the same
early-stopping decisions and returns the same result. `Replicas()` is the single-process case: no-ops.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from retrieval.device import replica_device

T = TypeVar("T")


@dataclass(frozen=True)
class Replicas:
    """This process is replica `rank` of `world` (world 1: single process, nothing distributed)."""

    rank: int = 0
    world: int = 1

    def __post_init__(self) -> None:
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise ValueError(f"rank must lie in [0, world); got rank={self.rank}, world={self.world}")

    @classmethod
    def from_process_group(cls) -> Replicas:
        """The replica of the initialised default process group, or `Replicas()` when there is none."""
        if not torch.distributed.is_available() or not torch.distributed.is_initialized():
            return cls()
        return cls(torch.distributed.get_rank(), torch.distributed.get_world_size())

    @property
    def is_main(self) -> bool:
        """Rank 0: evaluates, logs and saves."""
        return self.rank == 0

    def shard(self, users: np.ndarray) -> np.ndarray:
        """This replica's users of a batch: every `world`-th one from `rank` (possibly none for a short batch)."""
        return users[self.rank :: self.world]

    def loss_scale(self, rows: int, total_rows: int) -> float:
        """c_r = W B_r / B (see the module docstring); 0 for a replica with no rows in this batch."""
        return self.world * rows / total_rows

    def wrap(self, module: nn.Module) -> nn.Module:
        """`module` under DistributedDataParallel (gradients all-reduced in backward), or itself for world 1."""
        if self.world == 1:
            return module
        return nn.parallel.DistributedDataParallel(module)

    def mean(self, value: float) -> float:
        """The mean of `value` over replicas."""
        if self.world == 1:
            return value
        total = torch.tensor([value], dtype=torch.float64)
        torch.distributed.all_reduce(total)
        return float(total.item()) / self.world

    def from_main(self, compute: Callable[[], T]) -> T:
        """`compute()` run on the main replica only; every replica returns its (picklable) value."""
        if self.world == 1:
            return compute()
        box = [compute() if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def threads_per_replica(world: int) -> int:
    """Share the CPUs: max(1, cpu_count // world) intra-op threads per replica."""
    return max(1, (os.cpu_count() or 1) // world)


def torchrun_replica(device_setting: str, threads: int | None) -> tuple[torch.device, int, int]:
    """(device, world size, rank) of this process as torchrun started it (WORLD_SIZE and RANK; 1 and 0
    without torchrun), after setting torch's intra-op threads to `threads` or a fair share of the CPUs.
    ValueError for a device setting that this world cannot use (`retrieval.device.replica_device`)."""
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    torch.set_num_threads(threads or threads_per_replica(world))
    return replica_device(device_setting, world), world, rank


def backend_for(device: torch.device | str) -> str:
    """The process-group backend for replicas training on `device`: `gloo` on the CPU; on CUDA, NCCL for CUDA
    tensors (gradients, gathered features) and gloo for the CPU ones (loss values, broadcast metrics)."""
    return "cpu:gloo,cuda:nccl" if torch.device(device).type == "cuda" else "gloo"


@contextmanager
def process_group(device: torch.device, world: int, rank: int, init_method: str = "env://") -> Iterator[Replicas]:
    """This process's `Replicas` inside a process group of `world` processes (none for world 1), destroyed on
    exit. On CUDA the process first selects its GPU (`device`, e.g. cuda:LOCAL_RANK), as NCCL needs."""
    if world > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(
            backend_for(device), init_method=init_method, rank=rank, world_size=world
        )
    try:
        yield Replicas.from_process_group()
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def main_first(replicas: Replicas, load: Callable[[], T]) -> T:
    """`load()` on every replica, rank 0's call finished before the others start: a download or a conversion
    into a cache happens once, and the others read what it left."""
    value = load() if replicas.is_main else None
    replicas.from_main(lambda: None)
    return value if replicas.is_main else load()
