"""What the ILM phases need to train data-parallel, on top of `retrieval.distributed.Replicas`.

Every replica draws the same seeded batch; replica r runs the Q-Former (and, in phase 2, the frozen LLM) on
its contiguous shard of the batch's rows only. The per-row / per-token losses (ITG, ITM, phase 2) are scaled by
c_r = W n_r / n (n_r of the n rows or tokens are this replica's), so that the mean over replicas is the batch
loss. The in-batch contrastive losses (ITC, IIC, UIC) are computed in full on every replica from features
gathered with a differentiable all-gather: its backward sums the W identical gradients of a replica's own
features, so after `average_gradients` (the mean over replicas, what DDP does) every parameter has the
gradient of the single-process batch loss L_c + L_p, L_c contrastive on features f, L_p = 1/W sum_r c_r L_r:

    grad = (1 / W) sum_r [ W (dL_c / df_r) (df_r / dtheta) + dL_c / dtheta |_f + d(c_r L_r) / dtheta ]
         = d(L_c + L_p) / dtheta,

where `|_f` is the dependence not through the features (the learned temperature).

`Replicas()` (one process) makes every function here the identity.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
# torch's autograd-aware all-gather (torch.distributed.nn.functional.all_gather is deprecated in its favour)
from torch.distributed import _functional_collectives as collectives

from retrieval.distributed import Replicas


def shard(replicas: Replicas, n: int) -> slice:
    """This replica's contiguous rows of a batch of `n`: sizes differ by at most one, earlier ranks larger."""
    size, extra = divmod(n, replicas.world)
    start = replicas.rank * size + min(replicas.rank, extra)
    return slice(start, start + size + (replicas.rank < extra))


def gather_rows(replicas: Replicas, local: torch.Tensor, n: int) -> torch.Tensor:
    """Every replica's `shard` rows of a batch of `n`, in batch order: `[n_r, ...]` -> `[n, ...]`.

    Differentiable: a replica's rows receive the sum over replicas of the gradients flowing into them.
    """
    if replicas.world == 1:
        return local
    longest = shard(Replicas(0, replicas.world), n).stop
    padded = torch.cat([local, local.new_zeros(longest - len(local), *local.shape[1:])])
    pieces = collectives.all_gather_single(padded, 0, torch.distributed.group.WORLD).split(longest)
    sizes = [len(range(n)[shard(Replicas(r, replicas.world), n)]) for r in range(replicas.world)]
    return torch.cat([piece[:size] for piece, size in zip(pieces, sizes, strict=True)])


def average_gradients(replicas: Replicas, parameters: Iterable[torch.nn.Parameter]) -> None:
    """Replace each gradient by its mean over replicas, in one all-reduce of the flattened gradients.

    A parameter without a gradient on some replica counts as a zero gradient there; one without a gradient on
    every replica keeps `grad=None` (AdamW then leaves it alone, as in one process).
    """
    if replicas.world == 1:
        return
    parameters = [p for p in parameters if p.requires_grad]
    present = torch.tensor([p.grad is not None for p in parameters], dtype=torch.float32)
    torch.distributed.all_reduce(present)
    used = [p for p, count in zip(parameters, present.tolist(), strict=True) if count > 0]
    for p in used:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in used])
    torch.distributed.all_reduce(flat)
    flat /= replicas.world
    for p, piece in zip(used, flat.split([p.numel() for p in used]), strict=True):
        p.grad.copy_(piece.view_as(p))


def mean_values(replicas: Replicas, values: dict[str, float]) -> dict[str, float]:
    """Each value's mean over replicas (one all-reduce): the batch value of losses scaled as described above."""
    if replicas.world == 1:
        return values
    total = torch.tensor(list(values.values()), dtype=torch.float64)
    torch.distributed.all_reduce(total)
    return dict(zip(values, (total / replicas.world).tolist(), strict=True))

