"""Where training runs: a device setting (`auto`, `cpu`, `cuda`, `cuda:N`) resolved to one `torch.device`.

`auto` is `cuda` when `torch.cuda.is_available()`, else `cpu`. A bare `cuda` names the process's own GPU:
`cuda:{local_rank}` under torchrun (LOCAL_RANK), `cuda:0` otherwise; `cuda:N` is taken as given.
"""

from __future__ import annotations

import os
import re

import torch

from retrieval.config import DEVICE_PATTERN


def resolve_device(setting: str = "auto", local_rank: int | None = None) -> torch.device:
    """The `torch.device` of `setting` for the process of torchrun's `local_rank` (None: not under torchrun).

    ValueError when the setting is malformed or asks for CUDA that this torch build or machine lacks.
    """
    if not re.match(DEVICE_PATTERN, setting):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N; got {setting!r}")
    if setting == "cpu" or (setting == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(
            f"device {setting!r} needs CUDA, but torch.cuda.is_available() is False here "
            f"(torch {torch.__version__}); use device=cpu or auto"
        )
    if setting in ("auto", "cuda"):
        return torch.device("cuda", local_rank or 0)
    return torch.device(setting)


def replica_device(setting: str, world: int) -> torch.device:
    """This process's device for `setting` among `world` replicas: under torchrun (world > 1) a bare cuda or
    auto is cuda:LOCAL_RANK."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else None
    return resolve_device(setting, local_rank)
