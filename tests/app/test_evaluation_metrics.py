"""Each metric against a hand computation."""

from __future__ import annotations

import math

import pytest

from app.evaluation.metrics import (
    mean_stderr,
    mrr_at_k,
    ndcg_at_k,
    percentile,
    rank_of,
    recall_at_k,
    repeat_share,
    share,
    without_mentioned,
)

RANKED = [40, 7, 13, 2, 9]


def test_rank_of_is_one_based():
    assert rank_of(RANKED, 40) == 1
    assert rank_of(RANKED, 2) == 4
    assert rank_of(RANKED, 99) is None


@pytest.mark.parametrize(("rank", "k", "expected"), [(1, 1, 1.0), (4, 5, 1.0), (4, 3, 0.0), (None, 50, 0.0)])
def test_recall(rank, k, expected):
    assert recall_at_k(rank, k) == expected


@pytest.mark.parametrize(
    ("rank", "k", "expected"),
    [(1, 1, 1.0), (3, 5, 0.5), (4, 5, 1 / math.log2(5)), (7, 10, 1 / 3), (4, 3, 0.0), (None, 10, 0.0)],
)
def test_ndcg(rank, k, expected):
    # one relevant item: DCG = 1/log2(rank+1), ideal DCG = 1; log2(4) = 2, log2(8) = 3
    assert ndcg_at_k(rank, k) == pytest.approx(expected)


@pytest.mark.parametrize(("rank", "k", "expected"), [(1, 1, 1.0), (4, 5, 0.25), (4, 3, 0.0), (None, 5, 0.0)])
def test_mrr(rank, k, expected):
    assert mrr_at_k(rank, k) == expected


def test_without_mentioned_keeps_order():
    assert without_mentioned(RANKED, {7, 2, 100}) == [40, 13, 9]


def test_repeat_share_of_the_head():
    assert repeat_share(RANKED, {7, 2}, k=3) == pytest.approx(1 / 3)
    assert repeat_share(RANKED, {7, 2}, k=10) == pytest.approx(2 / 5)  # fewer than k returned: share of those
    assert repeat_share([], {7}, k=10) is None


def test_mean_stderr_by_hand():
    # values 1, 0, 0, 1: mean 0.5; sample variance = (4 * 0.25) / 3 = 1/3; se = sqrt(1/3) / 2
    result = mean_stderr([1.0, 0.0, 0.0, 1.0])
    assert result.mean == 0.5
    assert result.stderr == pytest.approx(math.sqrt(1 / 3) / 2)
    assert result.n == 4
    assert mean_stderr([0.3]).stderr == 0.0
    assert mean_stderr([]).model_dump() == {"mean": 0.0, "stderr": 0.0, "n": 0}


def test_percentile_interpolates():
    # numpy linear: p50 of 10, 20, 30, 40 = 25; p95 = 30 + 0.85 * 10
    assert percentile([40.0, 10.0, 30.0, 20.0], 50) == pytest.approx(25.0)
    assert percentile([10.0, 20.0, 30.0, 40.0], 95) == pytest.approx(38.5)
    assert percentile([], 50) is None


def test_share():
    assert share(1, 4) == 0.25
    assert share(0, 0) is None
