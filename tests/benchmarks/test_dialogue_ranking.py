"""The dialogue-ranking benchmark's splits: the conversation prior never sees the dialogues it is scored on."""

from __future__ import annotations

from benchmarks.dialogue_ranking import prior_folds, split_dialogues


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
