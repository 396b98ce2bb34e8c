"""The item soft-token table `[n_items, K, d_llm]`, keyed by catalogue id, that serving splices into prompts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from ilm_model.errors import CheckpointError
from ilm_model.modeling import ItemLanguageModel
from retrieval.catalogue import Catalogue
from retrieval.errors import UnknownItemError
from retrieval.storage import write_atomic

FORMAT = "ilmrec-soft-tokens"
FORMAT_VERSION = "1"


class SoftTokenTable:
    """Soft tokens `[n_items, K, d_llm]` (float32) with the catalogue id of each row."""

    def __init__(self, item_ids: np.ndarray | Sequence[int], tokens: torch.Tensor):
        self.item_ids = np.asarray(item_ids, dtype=np.int64)
        if tokens.ndim != 3 or tokens.shape[0] != len(self.item_ids):
            raise ValueError(f"tokens must be [n_items={len(self.item_ids)}, K, d_llm]; got {tuple(tokens.shape)}")
        self.tokens = tokens.detach().to(torch.float32).cpu().contiguous()
        self._row_of = {int(i): r for r, i in enumerate(self.item_ids)}
        if len(self._row_of) != len(self.item_ids):
            raise ValueError("soft-token table has duplicate item ids")

    def __len__(self) -> int:
        return len(self.item_ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._row_of

    @property
    def num_tokens(self) -> int:
        """K, soft tokens per item."""
        return self.tokens.shape[1]

    @property
    def hidden_size(self) -> int:
        """d_llm, the LLM embedding width the tokens live in."""
        return self.tokens.shape[2]

    def lookup(self, item_ids: Sequence[int]) -> torch.Tensor:
        """Soft tokens of catalogue ids, `[len(item_ids), K, d_llm]`; UnknownItemError for an id not in the table."""
        rows = []
        for item_id in item_ids:
            try:
                rows.append(self._row_of[int(item_id)])
            except KeyError:
                raise UnknownItemError(f"item {item_id} has no soft tokens (not in the table)") from None
        return self.tokens[torch.as_tensor(rows, dtype=torch.long)]

    def save(self, path: Path) -> None:
        """Write a safetensors file (`tokens`, `item_ids`) atomically."""
        payload = {"tokens": self.tokens.detach().cpu().contiguous(), "item_ids": torch.from_numpy(self.item_ids)}
        write_atomic(Path(path), save(payload, metadata={"format": FORMAT, "version": FORMAT_VERSION}))

    @classmethod
    def load(
        cls, path: Path, hidden_size: int | None = None, num_tokens: int | None = None
    ) -> SoftTokenTable:
        """Read a file written by `save`; CheckpointError (naming the file) when it is not one, or when its
        token width / tokens per item differ from the given `hidden_size` (the LLM's) / `num_tokens` (K)."""
        try:
            tensors = load(Path(path).read_bytes())
            table = cls(tensors["item_ids"].numpy(), tensors["tokens"])
        except (OSError, SafetensorError, KeyError, ValueError) as exc:
            raise CheckpointError(
                f"{path}: not a soft-token table ({exc}); rebuild it from the ILM checkpoint"
            ) from None
        expected = {"hidden_size": hidden_size, "num_tokens": num_tokens}
        actual = {"hidden_size": table.hidden_size, "num_tokens": table.num_tokens}
        wrong = {k: (actual[k], v) for k, v in expected.items() if v is not None and v != actual[k]}
        if wrong:
            raise CheckpointError(
                f"{path}: soft-token table does not fit (stored, expected): {wrong}; rebuild it with this LLM / ILM"
            )
        return table


def build_soft_token_table(
    model: ItemLanguageModel, catalogue: Catalogue, cf_embeddings: np.ndarray, batch_size: int = 256
) -> SoftTokenTable:
    """Soft tokens of every catalogue item; `cf_embeddings [n_items, d_cf]` rows are aligned with the catalogue."""
    if len(cf_embeddings) != len(catalogue):
        raise ValueError(f"{len(cf_embeddings)} CF embeddings for a catalogue of {len(catalogue)} items")
    cf = torch.as_tensor(np.asarray(cf_embeddings), dtype=torch.float32)
    return SoftTokenTable(catalogue.ids, model.represent_items(cf, batch_size).soft_tokens)
