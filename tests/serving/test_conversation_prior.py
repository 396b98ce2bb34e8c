"""The conversation prior: dialogue counts, co-mentions and the Dirichlet smoothing, against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.catalogue import Catalogue, Movie
from serving.conversation_prior import dialogue_statistics, smoothed_log_prior


def catalogue(n: int = 4) -> Catalogue:
    return Catalogue(Movie(item_id=10 * (r + 1), title=f"M{r}", genres=["Drama"]) for r in range(n))


def test_each_dialogue_counts_a_movie_once_and_unknown_ids_are_ignored():
    stats = dialogue_statistics([[10, 10, 30], [30, 999], [], [20]], catalogue())
    assert stats.counts.tolist() == [1.0, 1.0, 2.0, 0.0]


def test_co_mentions_equal_the_dense_count_of_shared_dialogues():
    rng = np.random.default_rng(0)
    movies = catalogue(12)
    dialogues = [list(rng.choice([10 * (r + 1) for r in range(12)] + [999], size=rng.integers(0, 6)))
                 for _ in range(40)]
    dense = np.zeros((12, 12))
    for items in dialogues:
        rows = {i // 10 - 1 for i in items if i != 999}
        for a in rows:
            for b in rows - {a}:
                dense[a, b] += 1
    co = dialogue_statistics(dialogues, movies).co_mentions
    for r in range(12):
        one_hot = co.weighted_rows([r], [1.0])
        assert one_hot.tolist() == dense[r].tolist()
    assert co.weighted_rows([0, 3], [1.0, 0.5]) == pytest.approx(dense[0] + 0.5 * dense[3])
    assert not dialogue_statistics([], movies).co_mentions.weighted_rows([2], [1.0]).any()


def test_smoothed_prior_matches_the_formula():
    counts, base, a = np.array([3.0, 0.0, 1.0, 0.0]), np.array([1.0, 9.0, 0.0, 4.0]), 5.0
    q = np.array([2.0, 10.0, 1.0, 5.0]) / 18.0
    expected = [np.log((counts[i] + a * q[i]) / (4.0 + a)) for i in range(4)]
    got = smoothed_log_prior(counts, base, a)
    assert got == pytest.approx(expected)
    assert np.exp(got).sum() == pytest.approx(1.0)


def test_movies_no_dialogue_names_keep_the_base_order_and_more_dialogues_outweigh_it():
    base = np.array([100.0, 10.0, 1.0, 50.0])
    few = smoothed_log_prior(np.array([0.0, 0.0, 1.0, 0.0]), base, 50.0)
    assert few[0] > few[3] > few[1], "unnamed movies ordered by base popularity"
    assert few[2] < few[0], "one dialogue does not beat the most rated movie at strength 50"
    many = smoothed_log_prior(np.array([0.0, 0.0, 40.0, 0.0]), base, 50.0)
    assert many[2] == many.max()


@pytest.mark.parametrize(("counts", "base", "strength", "message"), [
    ([1.0, 2.0], [1.0], 1.0, "equal-length"),
    ([1.0, 2.0], [1.0, 1.0], 0.0, "strength must be > 0"),
    ([-1.0, 2.0], [1.0, 1.0], 1.0, "non-negative"),
])
def test_bad_input_is_refused(counts, base, strength, message):
    with pytest.raises(ValueError, match=message):
        smoothed_log_prior(np.array(counts), np.array(base), strength)
