"""The vectorised `candidates` against a brute-force, per-movie reference (the loop it replaced) on many random
dialogue states, catalogues, popularity vectors and ranking configs: the rankings must be identical."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.catalogue import Catalogue, Movie
from retrieval.errors import UnknownItemError
from retrieval.recommender import PopularityRecommender
from serving.config import RankingConfig
from serving.conversation_prior import dialogue_statistics, smoothed_log_prior, word_cues
from serving.dialogue import MOOD_GENRES, CatalogueArrays, DialogueState, candidates, passes_constraints

GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Thriller", "Animation", "Children", "(no genres listed)")


def reference_candidates(state, recommender, catalogue, k, popularity, config, text_scores, log_prior=None,
                         dialogues=None, requests=None):
    """The per-item implementation `candidates` had before it was vectorised (brute force, Python loops)."""
    popularity = np.zeros(len(catalogue)) if popularity is None else np.asarray(popularity, dtype=np.float64)
    seen = (set(state.mentioned) | set(state.recommended) | set(state.liked) | set(state.disliked)
            | set(state.neutral) | set(state.seen) | set(config.deny_list))
    order_by = popularity if log_prior is None else log_prior
    by_popularity = [int(catalogue.ids[r]) for r in np.argsort(-order_by, kind="stable")]
    pool: list[int] = []
    fused = reference_fused(state, recommender, catalogue, popularity, config, text_scores, seen, log_prior,
                            dialogues, requests)
    if fused is not None:
        order = np.lexsort((np.arange(len(fused)), -fused))
        pool = [i for i in (int(catalogue.ids[r]) for r in order) if i not in seen][: config.pool]
    personalised = set(pool)
    pool += [i for i in by_popularity if i not in personalised]
    allowed = [i for i in pool if i not in seen and passes_constraints(catalogue[i], state)]
    if not allowed:
        return []
    scores = {item: 1.0 - rank / len(allowed) + reference_boost(catalogue[item], state, config)
              for rank, item in enumerate(allowed)}
    if state.liked:
        return sorted(allowed, key=lambda i: (i not in personalised, -scores[i]))[:k]
    chosen: list[int] = []
    order = sorted(allowed, key=lambda i: -scores[i])
    while len(chosen) < min(k, len(order)):
        best, best_value = None, -np.inf
        for item in order:
            if item in chosen:
                continue
            value = scores[item] - config.diversity * max((jaccard(item, c, catalogue) for c in chosen), default=0.0)
            if value > best_value:
                best, best_value = item, value
        chosen.append(best)
    return chosen


def reference_fused(state, recommender, catalogue, popularity, config, text_scores, exclude, log_prior=None,
                    dialogues=None, requests=None):
    def z(values):
        finite = np.isfinite(values)
        out = np.zeros_like(values, dtype=np.float64)
        if finite.sum() > 1 and values[finite].std() > 0:
            out[finite] = (values[finite] - values[finite].mean()) / values[finite].std()
        if not finite.all():
            out[~finite] = out[finite].min() if finite.any() else 0.0
        return out

    total, used = np.zeros(len(catalogue)), False
    items = [*state.liked, *state.neutral, *state.disliked]
    weights = ([1.0] * len(state.liked) + [config.neutral_weight] * len(state.neutral)
               + [config.disliked_weight] * len(state.disliked))
    if any(w > 0 for w in weights):
        n = len(catalogue) - sum(1 for i in exclude | set(items) if i in catalogue)
        if n > 0:
            ids, values = recommender.recommend(items, k=n, exclude=sorted(exclude), weights=weights)
            cf = np.full(len(catalogue), np.nan)
            for item, value in zip(ids, values):
                cf[catalogue.row(int(item))] = value
            support = np.ones(len(catalogue))
            if config.cf_support and popularity is not None and np.any(popularity):
                support = np.array([n / (n + config.cf_support) for n in popularity])
            total += config.cf_weight * z(cf) * support
            used = True
        if dialogues is not None and config.co_mention_weight:
            together = np.zeros(len(catalogue))
            for item, weight in zip(items, weights):
                if weight <= 0:
                    continue
                for r, other in enumerate(catalogue.ids):
                    if other != item:
                        together[r] += weight * sum(item in d and other in d for d in map(set, dialogues))
            total += config.co_mention_weight * z(np.log1p(together))
            used = True
    if text_scores is not None:
        total += config.text_weight * z(np.asarray(text_scores, dtype=np.float64))
        used = True
    if requests is not None and config.cue_weight:
        said = [(set(" ".join(texts).lower().split()), set(items) & set(catalogue.ids.tolist()))
                for texts, items in requests]
        said = [(words, items) for words, items in said if items]
        recent = " ".join(state.user_texts[-config.cue_turns :]).lower().split()
        known = {w for w in recent if any(w in words for words, _ in said)}
        if known:
            cue, mu = np.zeros(len(catalogue)), config.cue_smoothing
            for word in sorted(known):
                p_w = sum(word in words for words, _ in said) / len(said)
                for r, item in enumerate(catalogue.ids):
                    n_wi = sum(word in words and item in items for words, items in said)
                    c_i = sum(item in items for _, items in said)
                    cue[r] += np.log((n_wi + mu * p_w) / (c_i + mu) / p_w)
            total += config.cue_weight * z(cue)
            used = True
    if not used:
        return None
    if config.popularity_weight:
        total += config.popularity_weight * z(np.log1p(np.maximum(popularity, 0.0)))
    if log_prior is not None:
        total += config.prior_weight * z(log_prior)
    return total


def reference_boost(movie, state, config) -> float:
    genres, wanted = set(movie.genres), set(state.include_genres)
    boost = config.include_boost * len(genres & wanted) / len(wanted) if wanted else 0.0
    if state.mood is not None:
        prefer, push = MOOD_GENRES[state.mood]
        boost += config.mood_boost * (bool(genres & prefer) - bool(genres & push))
    return boost


def jaccard(a: int, b: int, catalogue: Catalogue) -> float:
    x, y = set(catalogue[a].genres), set(catalogue[b].genres)
    return len(x & y) / len(x | y) if x | y else 0.0


def random_catalogue(rng: np.random.Generator, n: int, names: tuple[str, ...] = GENRES) -> Catalogue:
    """Shuffled ids, unknown years, movies without genres: the cases the arrays must get right."""
    ids = rng.permutation(np.arange(1, 5 * n))[:n]
    movies = []
    for item_id in ids:
        genres = tuple(g for g in names if rng.random() < 3 / len(names))
        year = None if rng.random() < 0.1 else int(rng.integers(1950, 2020))
        movies.append(Movie(item_id=int(item_id), title=f"Movie {item_id}", year=year, genres=genres))
    return Catalogue(movies)


def random_case(rng: np.random.Generator, catalogue: Catalogue):
    """(state, popularity, config, text scores, k) drawn so that ties, empty pools and fill-ups all happen."""
    ids = [int(i) for i in catalogue.ids]

    def some(most: int) -> list[int]:
        return [int(i) for i in rng.choice(ids, size=int(rng.integers(0, most + 1)), replace=False)]

    genres = [*catalogue.genres(), "Western"]
    low = int(rng.integers(1960, 2015)) if rng.random() < 0.3 else None
    high = int(rng.integers(1970, 2021)) if rng.random() < 0.3 else None
    liked, disliked, neutral = some(3), some(2), some(2)
    state = DialogueState(
        liked=liked, disliked=[i for i in disliked if i not in liked],
        neutral=[i for i in neutral if i not in liked + disliked], mentioned=liked + disliked + neutral,
        seen=some(2), recommended=some(8),
        include_genres=list(rng.choice(genres, size=int(rng.integers(0, 3)), replace=False)),
        exclude_genres=list(rng.choice(genres, size=int(rng.integers(0, 2)), replace=False)),
        only_genres=[list(rng.choice(genres, size=int(rng.integers(1, 3)), replace=False))
                     for _ in range(int(rng.choice([0, 0, 1, 2])))],
        mood=rng.choice([None, "darker", "lighter"]), year_min=low, year_max=high,
    )
    popularity = [None, rng.integers(0, 4, len(catalogue)).astype(float), rng.random(len(catalogue))][
        int(rng.integers(0, 3))]
    config = RankingConfig(
        pool=int(rng.choice([1, 3, 10, 300])), popularity_weight=float(rng.choice([0.0, 0.25])),
        text_weight=float(rng.choice([0.0, 1.0])), diversity=float(rng.choice([0.0, 0.3, 1.0])),
        include_boost=float(rng.choice([0.0, 0.5, 2.0])), mood_boost=float(rng.choice([0.0, 0.3])),
        disliked_weight=float(rng.choice([-0.5, 0.0])), deny_list=some(3),
    )
    text = None if rng.random() < 0.5 else np.round(rng.random(len(catalogue)), 1)  # rounded: ties
    return state, popularity, config, text, int(rng.integers(1, 60))


def test_candidates_equal_the_reference_on_the_tiny_catalogue(catalogue, recommender):
    rng = np.random.default_rng(0)
    for _ in range(300):
        state, popularity, config, text, k = random_case(rng, catalogue)
        expected = reference_candidates(state, recommender, catalogue, k, popularity, config, text)
        assert candidates(state, recommender, catalogue, k, popularity=popularity, config=config,
                          text_scores=text) == expected, state
        arrays = CatalogueArrays.build(catalogue, popularity)
        assert candidates(state, recommender, catalogue, k, config=config, text_scores=text,
                          arrays=arrays) == expected, state


@pytest.mark.parametrize(("seed", "names"), [(1, GENRES), (2, GENRES), (3, tuple(f"G{j}" for j in range(70)))],
                         ids=["9 genres", "9 genres again", "70 genres (two bit words)"])
def test_candidates_equal_the_reference_on_random_catalogues(seed, names):
    rng = np.random.default_rng(seed)
    catalogue = random_catalogue(rng, 120, names)
    recommender = PopularityRecommender(catalogue, rng.integers(0, 20, len(catalogue)))
    for _ in range(100):
        state, popularity, config, text, k = random_case(rng, catalogue)
        arrays = CatalogueArrays.build(catalogue, popularity)
        assert candidates(state, recommender, catalogue, k, config=config, text_scores=text, arrays=arrays) == \
            reference_candidates(state, recommender, catalogue, k, popularity, config, text), state


def test_candidates_with_a_conversation_prior_equal_the_reference(catalogue, recommender):
    rng = np.random.default_rng(4)
    for _ in range(200):
        state, popularity, config, text, k = random_case(rng, catalogue)
        config = config.model_copy(update={"prior_weight": float(rng.choice([0.0, 1.0, 4.0])),
                                           "co_mention_weight": float(rng.choice([0.0, 1.0]))})
        dialogues = [[int(i) for i in rng.choice(catalogue.ids, size=rng.integers(1, 5), replace=False)]
                     for _ in range(int(rng.integers(0, 12)))]
        stats = dialogue_statistics(dialogues, catalogue)
        base = np.zeros(len(catalogue)) if popularity is None else popularity
        log_prior = smoothed_log_prior(stats.counts, base, 5.0)
        arrays = CatalogueArrays.build(catalogue, popularity, log_prior, stats.co_mentions)
        assert candidates(state, recommender, catalogue, k, config=config, text_scores=text, arrays=arrays) == \
            reference_candidates(state, recommender, catalogue, k, popularity, config, text, log_prior,
                                 dialogues), state


def test_candidates_with_word_cues_equal_the_reference(catalogue, recommender):
    rng = np.random.default_rng(5)
    vocabulary = ["scary", "funny", "kids", "superhero", "the", "please"]
    for _ in range(100):
        state, popularity, config, text, k = random_case(rng, catalogue)
        state = state.model_copy(update={"user_texts": [" ".join(rng.choice(vocabulary, size=rng.integers(0, 4)))
                                                        for _ in range(int(rng.integers(0, 3)))]})
        config = config.model_copy(update={"cue_weight": float(rng.choice([0.0, 1.0, 4.0])),
                                           "cue_smoothing": float(rng.choice([1.0, 10.0])),
                                           "cue_turns": int(rng.integers(1, 4))})
        requests = [([" ".join(rng.choice(vocabulary, size=rng.integers(1, 4)))],
                     [int(i) for i in rng.choice(catalogue.ids, size=rng.integers(0, 3), replace=False)])
                    for _ in range(int(rng.integers(0, 12)))]
        arrays = CatalogueArrays.build(catalogue, popularity, word_cues=word_cues(requests, catalogue))
        assert candidates(state, recommender, catalogue, k, config=config, text_scores=text, arrays=arrays) == \
            reference_candidates(state, recommender, catalogue, k, popularity, config, text, requests=requests), state


def test_cold_start_follows_the_conversation_prior(catalogue, recommender):
    popularity = np.arange(len(catalogue), dtype=np.float64)
    counts = np.zeros(len(catalogue))
    counts[[3, 7]] = [5.0, 9.0]
    arrays = CatalogueArrays.build(catalogue, popularity, smoothed_log_prior(counts, popularity, 1.0))
    assert arrays.by_popularity[:2].tolist() == [7, 3], "the most talked-about movies come first"
    assert arrays.by_popularity[2] == len(catalogue) - 1, "then rating popularity"
    with pytest.raises(ValueError, match="finite values"):
        CatalogueArrays.build(catalogue, popularity, np.full(len(catalogue), -np.inf))


def test_catalogue_arrays(catalogue):
    popularity = np.arange(len(catalogue), dtype=np.float64) % 3
    arrays = CatalogueArrays.build(catalogue, popularity)
    ids = [int(i) for i in catalogue.ids[[5, 0, 39]]]
    assert arrays.rows(ids).tolist() == [5, 0, 39]
    assert np.flatnonzero(arrays.mask([*ids, 10_000])).tolist() == [0, 5, 39], "unknown ids are ignored"
    with pytest.raises(UnknownItemError, match="10000"):
        arrays.rows([ids[0], 10_000])
    assert arrays.by_popularity[:3].tolist() == [2, 5, 8], "most popular first, ties in catalogue order"
    toy_story = catalogue[ids[1]]
    assert arrays.years[0] == toy_story.year
    assert [g for g, has in zip(arrays.genre_names, arrays.genres[0]) if has] == sorted(toy_story.genres)
    assert arrays.genre_count(["Comedy", "Animation", "Western"])[0] == 2
    with pytest.raises(ValueError, match="one value per catalogue row"):
        CatalogueArrays.build(catalogue, popularity[:-1])


def test_arrays_and_popularity_are_not_both_given(catalogue, recommender):
    arrays = CatalogueArrays.build(catalogue)
    with pytest.raises(ValueError, match="not both"):
        candidates(DialogueState(), recommender, catalogue, 5, popularity=np.ones(len(catalogue)), arrays=arrays)
