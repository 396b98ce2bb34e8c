"""What people ask for in conversations: a prior over the catalogue learned from logged dialogues.

Rating data says what MovieLens raters watched; a conversational recommender is asked about other movies (on
ReDial, recent mainstream films come up far more often than their rating counts suggest). Counting, per
catalogue movie, the logged dialogues that mention or recommend it, smoothed towards rating popularity, gives
the prior `serving.dialogue.fused_scores` adds with `RankingConfig.prior_weight` and cold start ranks by.
How often two movies came up in the same dialogue (`DialogueStatistics.co_mentions`) adds, with
`RankingConfig.co_mention_weight`, the movies people named beside the ones this person likes; which movies were
recommended after which words (`WordCues`) adds, with `RankingConfig.cue_weight`, what people who said the same
words were recommended.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from retrieval.catalogue import Catalogue

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


@dataclass(frozen=True, eq=False)
class SparseCounts:
    """`[n_rows, n_columns]` sparse counts as compressed rows: row r's columns are
    `columns[offsets[r]:offsets[r + 1]]` (ascending, distinct), its counts `counts[...]`."""

    offsets: np.ndarray
    columns: np.ndarray
    counts: np.ndarray
    n_columns: int

    @classmethod
    def of_pairs(cls, rows: np.ndarray, columns: np.ndarray, n_rows: int, n_columns: int) -> SparseCounts:
        """How often each (rows[j], columns[j]) pair occurs, for equal-length int arrays."""
        width = max(n_columns, 1)
        codes, together = np.unique(np.asarray(rows, np.int64) * width + np.asarray(columns, np.int64),
                                    return_counts=True)
        offsets = np.searchsorted(codes // width, np.arange(n_rows + 1))
        return cls(offsets, codes % width, together.astype(np.float64), n_columns)

    def weighted_rows(self, rows: Sequence[int] | np.ndarray, weights: Sequence[float]) -> np.ndarray:
        """`[n_columns]` sum_j weights[j] * C[rows[j], :] (e.g. how often each movie came up beside the given ones)."""
        out = np.zeros(self.n_columns)
        for row, weight in zip(rows, weights):
            span = slice(self.offsets[row], self.offsets[row + 1])
            np.add.at(out, self.columns[span], weight * self.counts[span])
        return out


@dataclass(frozen=True, eq=False)
class DialogueStatistics:
    """What logged dialogues say about the catalogue."""

    counts: np.ndarray
    """`[n_items]` float64: in how many dialogues each movie came up."""
    co_mentions: SparseCounts
    """`[n_items, n_items]` (zero diagonal): in how many dialogues two movies both came up, or one came up and
    the other was recommended (`dialogue_statistics`)."""
    word_cues: WordCues | None = None
    """Which movies were recommended after which words, when the logs' texts were read."""


def dialogue_statistics(
    dialogues: Iterable[Iterable[int]], catalogue: Catalogue, recommended: Iterable[Iterable[int]] | None = None
) -> DialogueStatistics:
    """Counts and co-mentions of `dialogues`, each the catalogue ids it mentions or recommends (any order,
    repeats allowed; ids outside `catalogue` are ignored). With `recommended` (the ids each dialogue
    recommended, in the same order), co_mentions[j, i] counts the dialogues in which j came up and i was
    recommended (what people were recommended beside j); without, those in which both came up (symmetric)."""
    n = len(catalogue)
    counts = np.zeros(n)
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    dialogues = [set(items) for items in dialogues]
    for items, given in zip(dialogues, dialogues if recommended is None else recommended, strict=True):
        rows, columns = _rows(items | set(given), catalogue), _rows(given, catalogue)
        counts[rows] += 1.0
        a, b = np.meshgrid(rows, columns, indexing="ij")
        off_diagonal = a != b
        pairs.append((a[off_diagonal], b[off_diagonal]))
    return DialogueStatistics(counts, SparseCounts.of_pairs(*_concatenated(pairs), n, n))


def cue_words(text: str) -> set[str]:
    """The distinct lower-case words of `text` (runs of letters, inner apostrophes kept: "don't"), the
    vocabulary of `WordCues`."""
    return set(_WORD.findall(text.lower()))


@dataclass(frozen=True, eq=False)
class WordCues:
    """Which movies logged dialogues recommended after which words of the person asking ("scary", "superhero",
    "kids", an actor's name), counted over the N dialogues that recommended a catalogue movie."""

    vocabulary: dict[str, int]
    """word -> row of `together` and `word_dialogues`."""
    together: SparseCounts
    """`[n_words, n_items]` n(w, i): dialogues in which the person said w and i was recommended."""
    word_dialogues: np.ndarray
    """`[n_words]` n(w): dialogues in which the person said w."""
    item_dialogues: np.ndarray
    """`[n_items]` c_i: dialogues in which i was recommended."""
    dialogues: int
    """N."""

    def scores(self, words: Iterable[str], smoothing: float) -> np.ndarray | None:
        """`[n_items]` how much more likely the person's `words` W are in dialogues that recommended each movie
        than in any (a query likelihood ratio, each movie's word rates Dirichlet-smoothed towards all dialogues'):

            s_i = sum_{w in W, n(w) > 0} log(P(w | i) / P(w)),   P(w | i) = (n(w, i) + mu P(w)) / (c_i + mu),
            P(w) = n(w) / N,   mu = `smoothing`

        = |W| log(mu / (c_i + mu)) + sum_w log(1 + n(w, i) / (mu P(w))); a word no dialogue has is left out,
        a word said as often beside i as anywhere adds about 0. None when no word is known."""
        if smoothing <= 0:
            raise ValueError(f"smoothing must be > 0, got {smoothing}")
        known = sorted(self.vocabulary[w] for w in set(words) if w in self.vocabulary)
        if not known:
            return None
        out = len(known) * np.log(smoothing / (self.item_dialogues + smoothing))
        for row in known:
            span = slice(self.together.offsets[row], self.together.offsets[row + 1])
            background = self.word_dialogues[row] / self.dialogues
            out[self.together.columns[span]] += np.log1p(self.together.counts[span] / (smoothing * background))
        return out


def word_cues(dialogues: Iterable[tuple[Iterable[str], Iterable[int]]], catalogue: Catalogue) -> WordCues:
    """`WordCues` of `dialogues`, each (the messages of the person asking, the catalogue ids recommended to
    them); a dialogue counts a word or a movie once, ids outside `catalogue` are ignored and a dialogue that
    recommended no catalogue movie is left out."""
    vocabulary: dict[str, int] = {}
    item_dialogues = np.zeros(len(catalogue))
    said: list[np.ndarray] = []
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    for texts, items in dialogues:
        rows = _rows(items, catalogue)
        if not len(rows):
            continue
        words = sorted(set().union(*(cue_words(t) for t in texts)))
        word_rows = np.array([vocabulary.setdefault(w, len(vocabulary)) for w in words], dtype=np.int64)
        item_dialogues[rows] += 1.0
        said.append(word_rows)
        a, b = np.meshgrid(word_rows, rows, indexing="ij")
        pairs.append((a.ravel(), b.ravel()))
    word_dialogues = np.bincount(np.concatenate(said) if said else np.zeros(0, np.int64),
                                 minlength=len(vocabulary)).astype(np.float64)
    together = SparseCounts.of_pairs(*_concatenated(pairs), len(vocabulary), len(catalogue))
    return WordCues(vocabulary, together, word_dialogues, item_dialogues, len(said))


def _rows(items: Iterable[int], catalogue: Catalogue) -> np.ndarray:
    """The distinct catalogue rows of `items`, ascending (ids outside the catalogue are ignored)."""
    return np.unique(np.asarray(catalogue.rows(sorted({int(i) for i in items if int(i) in catalogue})), np.int64))


def _concatenated(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The (rows, columns) of `pairs` one after the other."""
    if not pairs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate([a for a, _ in pairs]), np.concatenate([b for _, b in pairs])


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
