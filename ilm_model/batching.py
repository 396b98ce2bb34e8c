"""Row sampling for training: epochs of shuffled full batches."""

from __future__ import annotations

from collections.abc import Iterator

import torch


def shuffled_batches(n_items: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless full batches of row indices `[min(batch_size, n_items)]`: each epoch a fresh permutation, the
    remainder that does not fill a batch is dropped (so in-batch negatives always number batch_size - 1)."""
    if n_items < 1:
        raise ValueError("cannot sample batches from zero items")
    batch_size = min(batch_size, n_items)
    while True:
        order = torch.randperm(n_items, generator=generator)
        for start in range(0, n_items - batch_size + 1, batch_size):
            yield order[start : start + batch_size]
