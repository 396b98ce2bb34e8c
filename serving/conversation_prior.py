"""What people ask for in conversations: a prior over the catalogue learned from logged dialogues.

Rating data says what MovieLens raters watched; a conversational recommender is asked about other movies (on
ReDial, recent mainstream films come up far more often than their rating counts suggest). Counting, per
catalogue movie, the logged dialogues that mention or recommend it, smoothed towards rating popularity, gives
the prior `serving.dialogue.fused_scores` adds with `RankingConfig.prior_weight` and cold start ranks by.
How often two movies came up in the same dialogue (`CoMentions`) adds, with `RankingConfig.co_mention_weight`,
the movies people named beside the ones this person likes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from retrieval.catalogue import Catalogue


@dataclass(frozen=True, eq=False)
class CoMentions:
    """`[n_items, n_items]` sparse counts of the dialogues in which two movies both came up (zero diagonal),
    as compressed rows: row r's columns are `columns[offsets[r]:offsets[r + 1]]`, its counts `counts[...]`."""

    offsets: np.ndarray
    columns: np.ndarray
    counts: np.ndarray

    def weighted_rows(self, rows: Sequence[int] | np.ndarray, weights: Sequence[float]) -> np.ndarray:
        """`[n_items]` sum_j weights[j] * C[rows[j], :]: how often each movie came up beside the given ones."""
        out = np.zeros(len(self.offsets) - 1)
        for row, weight in zip(rows, weights):
            span = slice(self.offsets[row], self.offsets[row + 1])
            np.add.at(out, self.columns[span], weight * self.counts[span])
        return out


@dataclass(frozen=True, eq=False)
class DialogueStatistics:
    """What logged dialogues say about the catalogue."""

    counts: np.ndarray
    """`[n_items]` float64: in how many dialogues each movie came up."""
    co_mentions: CoMentions


def dialogue_statistics(dialogues: Iterable[Iterable[int]], catalogue: Catalogue) -> DialogueStatistics:
    """Counts and co-mentions of `dialogues`, each the catalogue ids it mentions or recommends (any order,
    repeats allowed; ids outside `catalogue` are ignored)."""
    n = len(catalogue)
    counts = np.zeros(n)
    pairs: list[np.ndarray] = []
    for items in dialogues:
        rows = np.unique(catalogue.rows(sorted({int(i) for i in items if int(i) in catalogue})))
        counts[rows] += 1.0
        if len(rows) > 1:
            a, b = np.meshgrid(rows, rows, indexing="ij")
            off_diagonal = a != b
            pairs.append(a[off_diagonal] * n + b[off_diagonal])
    codes, together = np.unique(np.concatenate(pairs) if pairs else np.zeros(0, np.int64), return_counts=True)
    offsets = np.searchsorted(codes // n, np.arange(n + 1)) if n else np.zeros(1, np.int64)
    return DialogueStatistics(counts, CoMentions(offsets, codes % n, together.astype(np.float64)))


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
