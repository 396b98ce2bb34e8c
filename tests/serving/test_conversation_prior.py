"""The conversation prior: dialogue counts, co-mentions and the Dirichlet smoothing, against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.catalogue import Catalogue, Movie
from serving.conversation_prior import cue_words, dialogue_statistics, smoothed_log_prior, word_cues


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


def test_recommended_beside_counts_dialogues_where_one_came_up_and_the_other_was_recommended():
    rng = np.random.default_rng(2)
    ids = [10 * (r + 1) for r in range(8)] + [999]
    said = [list(rng.choice(ids, size=rng.integers(0, 4))) for _ in range(30)]
    given = [list(rng.choice(ids, size=rng.integers(0, 3))) for _ in range(30)]
    dense = np.zeros((8, 8))
    for up, recommended in zip(said, given):
        came_up = {i // 10 - 1 for i in up + recommended if i != 999}
        for b in {i // 10 - 1 for i in recommended if i != 999}:
            for a in came_up - {b}:
                dense[a, b] += 1
    stats = dialogue_statistics(said, catalogue(8), given)
    for r in range(8):
        assert stats.co_mentions.weighted_rows([r], [1.0]).tolist() == dense[r].tolist()
    together = dialogue_statistics([s + g for s, g in zip(said, given)], catalogue(8))
    assert stats.counts.tolist() == together.counts.tolist()
    with pytest.raises(ValueError):
        dialogue_statistics(said, catalogue(8), given[:-1])


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


def test_cue_words_are_distinct_lower_case_words():
    assert cue_words("Scary movies? I don't like SCARY ones, 2 of them!") == \
        {"scary", "movies", "i", "don't", "like", "ones", "of", "them"}


def test_word_cues_count_dialogues_and_score_the_smoothed_likelihood_ratio():
    rng = np.random.default_rng(1)
    movies = catalogue(6)
    vocabulary = ["scary", "funny", "kids", "superhero", "the"]
    dialogues = [([" ".join(rng.choice(vocabulary, size=rng.integers(0, 4))) for _ in range(rng.integers(1, 3))],
                  [int(i) for i in rng.choice([10, 20, 30, 40, 50, 60, 999], size=rng.integers(0, 3))])
                 for _ in range(30)]
    kept = [(set().union(*(t.split() for t in texts)), {i // 10 - 1 for i in items if i != 999})
            for texts, items in dialogues]
    kept = [(words, rows) for words, rows in kept if rows]
    cues = word_cues(dialogues, movies)
    n = len(kept)
    assert cues.dialogues == n
    for r in range(6):
        assert cues.item_dialogues[r] == sum(r in rows for _, rows in kept)
    mu, query = 3.0, ["scary", "the", "scary", "unheard"]
    known = [w for w in set(query) if any(w in words for words, _ in kept)]
    expected = np.zeros(6)
    for w in known:
        p_w = sum(w in words for words, _ in kept) / n
        for r in range(6):
            n_wi = sum(w in words and r in rows for words, rows in kept)
            c_i = sum(r in rows for _, rows in kept)
            expected[r] += np.log((n_wi + mu * p_w) / (c_i + mu) / p_w)
    assert cues.scores(query, mu) == pytest.approx(expected)
    assert cues.scores(["unheard"], mu) is None
    with pytest.raises(ValueError, match="smoothing must be > 0"):
        cues.scores(query, 0.0)


def test_a_word_said_before_a_movie_was_recommended_raises_it():
    dialogues = [(["something scary please"], [10]), (["a scary one"], [10]), (["something funny"], [20]),
                 (["funny please"], [20, 30]), (["anything"], [999])]
    cues = word_cues(dialogues, catalogue())
    assert cues.dialogues == 4
    scary, funny = cues.scores(["scary"], 1.0), cues.scores(["funny"], 1.0)
    assert scary[0] > scary[3] > scary[1] and funny[1] > funny[0]
    assert word_cues([], catalogue()).scores(["scary"], 1.0) is None

