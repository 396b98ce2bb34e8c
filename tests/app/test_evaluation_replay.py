"""The replay protocol on hand-made turns and fixed-answer systems: rows, conditions, exclusion, figures."""

from __future__ import annotations

import math

import pytest

from app.evaluation.importers import EvalTurn, Utterance
from app.evaluation.replay import condition_metrics, run_evaluation
from app.evaluation.systems import System, SystemContext, SystemFailure, SystemOutput
from retrieval.catalogue import Catalogue, Movie

CATALOGUE = Catalogue(Movie(item_id=i, title=f"Movie {i}", year=2000) for i in range(1, 31))


class Fixed(System):
    """Answers every turn with the same list; records the k it was asked for."""

    def __init__(self, name: str, ids: list[int], reply: str | None = None, unresolved: int = 0):
        self.name, self.ids, self.reply, self.unresolved = name, ids, reply, unresolved
        self.asked: list[int] = []

    def recommend(self, context: SystemContext, k: int) -> SystemOutput:
        self.asked.append(k)
        names = ["A", "B"] if self.reply else []
        return SystemOutput(item_ids=self.ids, reply=self.reply, named_titles=names, unresolved_titles=names[: self.unresolved])


class Failing(System):
    name = "failing"

    def recommend(self, context: SystemContext, k: int) -> SystemOutput:
        raise SystemFailure("endpoint timed out")


def _turn(turn_id: str, targets: list[int], mentioned: list[int], unmatched: list[str] = ()) -> EvalTurn:
    return EvalTurn(
        dataset="toy", dialogue_id="d", turn_id=turn_id, context=[Utterance(role="user", text="hi")],
        targets=targets, mentioned=mentioned, unmatched_targets=list(unmatched),
    )


TURNS = [
    _turn("1", targets=[3], mentioned=[1]),  # rec target
    _turn("2", targets=[1, 4], mentioned=[1, 2], unmatched=["Gone (2030)"]),  # 1 is dis, 4 is rec
]


def test_rows_conditions_and_exclusion():
    system = Fixed("fixed", [1, 2, 3, 999, 4, 5])  # 999 is not a catalogue id
    result = run_evaluation(TURNS, [system], CATALOGUE, k_list=[1, 2, 3], seed=0, progress=False)
    assert system.asked == [3 + 1, 3 + 2]  # max k plus the number of mentioned movies
    by_target = {(r.turn_id, r.target): r for r in result.rows}
    assert set(by_target) == {("1", 3), ("2", 1), ("2", 4)}
    # turn 1: kept [1, 2, 3] -> rank 3; excluded [2, 3, 4] -> rank 2
    assert (by_target["1", 3].condition, by_target["1", 3].rank_kept, by_target["1", 3].rank_excluded) == ("rec", 3, 2)
    # turn 2: target 1 was mentioned: dis; kept rank 1, excluded never
    assert (by_target["2", 1].condition, by_target["2", 1].rank_kept, by_target["2", 1].rank_excluded) == ("dis", 1, None)
    # target 4: kept [1, 2, 3] misses it; excluded [3, 4, 5] has it at 2
    assert (by_target["2", 4].condition, by_target["2", 4].rank_kept, by_target["2", 4].rank_excluded) == ("rec", None, 2)

    summary = result.summary("fixed", "toy")
    rec_excluded = summary.metrics["seen_excluded"]["rec"]
    assert rec_excluded.n == 2
    assert rec_excluded.values["recall@1"].mean == 0.0
    assert rec_excluded.values["recall@2"].mean == 1.0
    assert rec_excluded.values["ndcg@2"].mean == pytest.approx(1 / math.log2(3))
    assert rec_excluded.values["mrr@3"].mean == pytest.approx(0.5)
    rec_kept = summary.metrics["seen_kept"]["rec"]
    assert rec_kept.values["recall@3"].mean == 0.5  # ranks 3 and None
    assert rec_kept.values["mrr@3"].mean == pytest.approx((1 / 3 + 0) / 2)
    assert summary.metrics["seen_kept"]["dis"].values["recall@1"].mean == 1.0
    assert summary.metrics["seen_excluded"]["dis"].values["recall@3"].mean == 0.0
    assert summary.metrics["seen_kept"]["all"].n == 3
    assert summary.metrics["seen_kept"]["all"].values["recall@3"].mean == pytest.approx(2 / 3)

    assert summary.out_of_catalogue_ids == 2
    # repeats among the first 10 catalogue ids returned [1, 2, 3, 4, 5]: turn 1 {1} -> 1/5, turn 2 {1, 2} -> 2/5
    assert summary.repeat_share.mean == pytest.approx(0.3)
    assert summary.named_titles == 0 and summary.out_of_catalogue_name_share is None

    dataset = result.datasets[0]
    assert (dataset.turns, dataset.rows, dataset.rows_rec, dataset.rows_dis, dataset.targets) == (2, 3, 2, 1, 4)
    assert dataset.coverage == pytest.approx(3 / 4)


def test_condition_metrics_standard_error():
    result = run_evaluation(TURNS, [Fixed("fixed", [1, 2, 3, 4, 5])], CATALOGUE, k_list=[2], seed=0, progress=False)
    rows = [r for r in result.rows if r.condition == "rec"]
    metrics = condition_metrics(rows, "seen_excluded", [2])
    # excluded ranks: turn 1 [2, 3, 4] -> 2, turn 2 [3, 4, 5] -> 2: both hits
    assert metrics.values["recall@2"].model_dump() == {"mean": 1.0, "stderr": 0.0, "n": 2}


def test_reply_names_and_failures_are_counted():
    talker = Fixed("talker", [3], reply="A and B", unresolved=1)
    result = run_evaluation(TURNS, [talker, Failing()], CATALOGUE, k_list=[1], seed=0, progress=False)
    talk = result.summary("talker", "toy")
    assert (talk.named_titles, talk.unresolved_titles, talk.out_of_catalogue_name_share) == (4, 2, 0.5)
    failed = result.summary("failing", "toy")
    assert failed.failed_turns == 2
    assert failed.metrics["seen_kept"]["all"].values["recall@1"].mean == 0.0
    assert failed.latency_p50_ms is None
    assert {t.failure for t in result.turns if t.system == "failing"} == {"endpoint timed out"}


def test_same_seed_same_figures():
    import random

    class Noisy(System):
        name = "noisy"

        def recommend(self, context, k):
            return SystemOutput(item_ids=random.sample(range(1, 31), min(k, 30)))

    first = run_evaluation(TURNS, [Noisy()], CATALOGUE, seed=7, progress=False)
    second = run_evaluation(TURNS, [Noisy()], CATALOGUE, seed=7, progress=False)
    assert first.rows == second.rows
    assert first.summaries[0].metrics == second.summaries[0].metrics


def test_only_limits_a_system_to_some_turns_and_adds_common_summaries():
    everything, sampled = Fixed("everything", [3, 4]), Fixed("sampled", [3, 4])
    only = {"sampled": [("toy", "d", "2")]}
    result = run_evaluation(TURNS, [everything, sampled], CATALOGUE, k_list=[1, 2], seed=0, progress=False, only=only)
    assert len(everything.asked) == 2 and len(sampled.asked) == 1
    assert {t.turn_id for t in result.turns if t.system == "sampled"} == {"2"}
    assert [(s.system, s.turns) for s in result.summaries] == [("everything", 2), ("sampled", 1)]
    # both systems on turn 2 alone: its rec target 4 sits at rank 2 once mentioned 1, 2 are removed
    assert [(s.system, s.turns) for s in result.common_summaries] == [("everything", 1), ("sampled", 1)]
    for s in result.common_summaries:
        assert s.value("recall@1").mean == 0.0 and s.value("recall@2").mean == 1.0
    assert result.summary("everything", "toy").value("recall@1").mean == 0.5  # turn 1: target 3 first
    full = run_evaluation(TURNS, [Fixed("a", [3])], CATALOGUE, k_list=[1], progress=False)
    assert full.common_summaries == []
    with pytest.raises(ValueError, match="not evaluated"):
        run_evaluation(TURNS, [Fixed("a", [])], CATALOGUE, progress=False, only={"b": []})


def test_misuse_is_refused():
    with pytest.raises(ValueError, match="unique"):
        run_evaluation(TURNS, [Fixed("a", []), Fixed("a", [])], CATALOGUE, progress=False)
    with pytest.raises(ValueError, match="at least one"):
        run_evaluation(TURNS, [], CATALOGUE, progress=False)
    with pytest.raises(ValueError, match=">= 1"):
        run_evaluation(TURNS, [Fixed("a", [])], CATALOGUE, k_list=[0, 5], progress=False)


def test_recommendations_that_break_the_users_hard_constraints_are_counted_per_turn():
    catalogue = Catalogue([
        Movie(item_id=1, title="Scream", year=1996, genres=["Horror"]),
        Movie(item_id=2, title="Amelie", year=2001, genres=["Comedy", "Romance"]),
        Movie(item_id=3, title="Heat", year=1995, genres=["Crime"]),
        Movie(item_id=4, title="Up", year=2009, genres=["Animation"]),
    ])
    turns = [
        EvalTurn(dataset="toy", dialogue_id="d", turn_id="1", targets=[2], mentioned=[],
                 context=[Utterance(role="user", text="something after 2000, no horror please")]),
        EvalTurn(dataset="toy", dialogue_id="d", turn_id="2", targets=[2], mentioned=[],
                 context=[Utterance(role="user", text="any good movie?")]),
    ]
    result = run_evaluation(turns, [Fixed("fixed", [1, 2, 3, 4])], catalogue, k_list=[1], seed=0, progress=False)
    constrained, free = result.turns
    assert constrained.constraint_violations == 2  # Scream (horror, 1996) and Heat (1995); Amelie and Up pass
    assert free.constraint_violations is None
    summary = result.summary("fixed", "toy")
    assert (summary.constrained_turns, summary.constraint_violations) == (1, 2)
