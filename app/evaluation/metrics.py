"""Small pure metric functions. One evaluation row has one target; ranks are 1-based, None = not returned.

With one relevant item per row (He et al., CIKM 2023 score each (turn, target) pair on its own):
  Recall@k = 1 if rank <= k else 0
  NDCG@k   = 1 / log2(rank + 1) if rank <= k else 0     (the ideal DCG of one relevant item is 1)
  MRR@k    = 1 / rank if rank <= k else 0
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

import numpy as np
from pydantic import BaseModel


class MeanStderr(BaseModel):
    """Mean of n values and its standard error (sample std / sqrt(n); 0 when n < 2)."""

    mean: float
    stderr: float
    n: int


def rank_of(ranked: Sequence[int], target: int) -> int | None:
    """1-based position of `target` in `ranked`, None when absent."""
    for position, item in enumerate(ranked, start=1):
        if item == target:
            return position
    return None


def recall_at_k(rank: int | None, k: int) -> float:
    return 1.0 if rank is not None and rank <= k else 0.0


def ndcg_at_k(rank: int | None, k: int) -> float:
    return 1.0 / math.log2(rank + 1) if rank is not None and rank <= k else 0.0


def mrr_at_k(rank: int | None, k: int) -> float:
    return 1.0 / rank if rank is not None and rank <= k else 0.0


METRICS = {"recall": recall_at_k, "ndcg": ndcg_at_k, "mrr": mrr_at_k}


def without_mentioned(ranked: Sequence[int], mentioned: Collection[int]) -> list[int]:
    """`ranked` with the items already mentioned in the dialogue removed, order kept."""
    seen = set(mentioned)
    return [item for item in ranked if item not in seen]


def repeat_share(ranked: Sequence[int], mentioned: Collection[int], k: int) -> float | None:
    """Share of the first k recommendations that were already mentioned; None when nothing was returned."""
    head = list(ranked)[:k]
    if not head:
        return None
    seen = set(mentioned)
    return sum(item in seen for item in head) / len(head)


def mean_stderr(values: Sequence[float]) -> MeanStderr:
    """Mean and standard error of the mean; an empty input gives mean 0 with n 0."""
    array = np.asarray(values, dtype=np.float64)
    n = int(array.size)
    if n == 0:
        return MeanStderr(mean=0.0, stderr=0.0, n=0)
    stderr = float(array.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    return MeanStderr(mean=float(array.mean()), stderr=stderr, n=n)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (linear interpolation, numpy's default); None for no values."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else None


def share(part: int, whole: int) -> float | None:
    """part / whole, None when whole is 0 (e.g. out-of-catalogue names when no names were given)."""
    return part / whole if whole else None
