"""What people ask for in conversations: a prior over the catalogue learned from logged dialogues.

Rating data says what MovieLens raters watched; a conversational recommender is asked about other movies (on
ReDial, recent mainstream films come up far more often than their rating counts suggest). Counting, per
catalogue movie, the logged dialogues that mention or recommend it, smoothed towards rating popularity, gives
the prior `serving.dialogue.fused_scores` adds with `RankingConfig.prior_weight` and cold start ranks by.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from retrieval.catalogue import Catalogue


def dialogue_counts(dialogues: Iterable[Iterable[int]], catalogue: Catalogue) -> np.ndarray:
    """`[n_items]` float64: in how many of `dialogues` (each the catalogue ids it mentions or recommends, in any
    order, repeats allowed) each catalogue row occurs. Ids outside `catalogue` are ignored."""
    counts = np.zeros(len(catalogue))
    for items in dialogues:
        known = sorted({int(i) for i in items if int(i) in catalogue})
        if known:
            counts[catalogue.rows(known)] += 1.0
    return counts


def smoothed_log_prior(counts: np.ndarray, base: np.ndarray, strength: float) -> np.ndarray:
    """`[n_items]` log p(i), the dialogue counts `c` smoothed towards `base` popularity `b` (e.g. rating counts):

        p(i) = (c_i + a q_i) / (sum_j c_j + a),    q_i = (b_i + 1) / sum_j (b_j + 1),    a = `strength`

    (a Dirichlet posterior mean with base measure q and `strength` pseudo-dialogues). Movies no dialogue names
    keep the order of `base`; the more dialogues, the less `base` matters.
    """
    counts, base = np.asarray(counts, dtype=np.float64), np.asarray(base, dtype=np.float64)
    if counts.shape != base.shape or counts.ndim != 1:
        raise ValueError(f"counts and base must be equal-length vectors, got {counts.shape} and {base.shape}")
    if strength <= 0:
        raise ValueError(f"strength must be > 0, got {strength}")
    if (counts < 0).any() or (base < 0).any():
        raise ValueError("counts and base must be non-negative")
    q = (base + 1.0) / (base + 1.0).sum()
    return np.log((counts + strength * q) / (counts.sum() + strength))
