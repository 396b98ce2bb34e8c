"""Row sampling for training: epochs of shuffled full batches, resumable from a checkpoint."""

from __future__ import annotations

import torch


class ShuffledBatches:
    """Endless full batches of row indices `[min(batch_size, n_items)]`: each epoch a fresh permutation, the
    remainder that does not fill a batch is dropped (so in-batch negatives always number batch_size - 1).

    The permutation is drawn from `generator` when the first batch of an epoch is taken. `order` (this epoch's
    permutation) and `position` (rows of it already served) are the whole state a checkpoint needs.
    """

    def __init__(self, n_items: int, batch_size: int, generator: torch.Generator):
        if n_items < 1:
            raise ValueError("cannot sample batches from zero items")
        self.n_items, self.batch_size, self.generator = n_items, min(batch_size, n_items), generator
        self.order = torch.empty(0, dtype=torch.long)
        self.position = 0

    def __iter__(self) -> ShuffledBatches:
        return self

    def __next__(self) -> torch.Tensor:
        if self.position + self.batch_size > len(self.order):
            self.order = torch.randperm(self.n_items, generator=self.generator)
            self.position = 0
        self.position += self.batch_size
        return self.order[self.position - self.batch_size : self.position]

    def restore(self, order: torch.Tensor, position: int) -> None:
        """Continue from a saved `order` and `position`; ValueError when they cannot be this sampler's."""
        if order.dtype != torch.long or tuple(order.shape) not in {(0,), (self.n_items,)}:
            raise ValueError(f"order {tuple(order.shape)} {order.dtype} is no permutation of {self.n_items} rows")
        if not 0 <= position <= len(order):
            raise ValueError(f"position {position} is outside an order of {len(order)} rows")
        self.order, self.position = order.clone(), position
