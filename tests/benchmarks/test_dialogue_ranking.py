"""The dialogue-ranking benchmark's splits: the conversation prior never sees the dialogues it is scored on."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.dialogue_ranking import cross_fit, prior_folds, recency_weighted_counts, split_dialogues


def test_splits_are_disjoint_and_seeded():
    ids = [f"d{i}" for i in range(50)] * 2
    tune, report = split_dialogues(ids)
    assert len(tune) == 15 and len(report) == 35 and not tune & report
    assert split_dialogues(list(reversed(ids))) == (tune, report)


def test_report_turns_learn_from_the_tune_split_and_tune_turns_from_the_other_half():
    tune, report = split_dialogues([f"d{i}" for i in range(50)])
    assert prior_folds(report, "report", tune) == {d: tune for d in report}
    folds = prior_folds(tune, "tune", tune)
    assert set(folds) == tune
    halves = {frozenset(f) for f in folds.values()}
    assert len(halves) == 2 and frozenset().union(*halves) == tune
    for dialogue, fold in folds.items():
        assert dialogue not in fold


def test_k_fold_cross_fitting_learns_from_the_other_folds_of_every_dialogue():
    everything = {f"d{i}" for i in range(23)}
    folds = cross_fit(everything, 5)
    assert set(folds) == everything
    held_out = {frozenset(everything - training) for training in folds.values()}
    assert sorted(len(f) for f in held_out) == [4, 4, 5, 5, 5]  # cuts at i * 23 // 5
    assert frozenset().union(*held_out) == everything
    for dialogue, training in folds.items():
        assert dialogue not in training and len(training) >= 18
    tune, report = split_dialogues(sorted(everything))
    scored = prior_folds(report, "report", tune, everything, 5)
    assert scored == {d: folds[d] for d in report}


def test_recency_weighted_counts_halve_a_rating_per_half_life_before_the_newest():
    rows, times = np.array([0, 0, 2, 1, 2]), np.array([100.0, 90.0, 80.0, 100.0, 60.0])
    got = recency_weighted_counts(rows, times, 4, 20.0)
    expected = [1.0 + 2 ** -0.5, 1.0, 2 ** -1.0 + 2 ** -2.0, 0.0]
    assert got == pytest.approx(expected)
    assert recency_weighted_counts(rows, times, 4, 1e12) == pytest.approx([2.0, 1.0, 2.0, 0.0])
    assert not recency_weighted_counts(np.zeros(0), np.zeros(0), 3, 1.0).any()
    with pytest.raises(ValueError, match="half_life must be > 0"):
        recency_weighted_counts(rows, times, 4, 0.0)
