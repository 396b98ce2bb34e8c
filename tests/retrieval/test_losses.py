import math

import pytest
import torch

from retrieval.losses import (
    MASK_VALUE,
    SampledBatchLoss,
    bpr_loss,
    lambda_weights,
    lambdarank_loss,
    negative_violator_count,
    remove_accidental_hits,
    sampled_softmax_loss,
    sampling_probability_correction,
    violations,
    violator_count,
    warp_loss,
)

# Two positives, three shared negatives; the last negative is an accidental hit of the second user.
POS = torch.tensor([2.0, 0.5])
NEG = torch.tensor([[1.5, 2.5, -1.0], [0.0, 3.0, 1.0]])
VALID = torch.tensor([[True, True, True], [True, True, False]])
N_ITEMS = 101


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def _gain(rank: float) -> float:
    return 1 / math.log2(1 + rank)


def test_violations_and_counts():
    assert violations(POS, NEG, VALID).tolist() == [[False, True, False], [False, True, False]]
    assert violations(POS, NEG, VALID, margin=1.0).tolist() == [[True, True, False], [True, True, False]]
    assert violator_count(violations(POS, NEG, VALID, margin=1.0)).tolist() == [2.0, 2.0]
    importance = torch.tensor([0.5, 2.0, 4.0])
    assert violator_count(violations(POS, NEG, VALID, margin=1.0), importance).tolist() == [2.5, 2.5]


def test_negative_violator_count_matches_brute_force():
    generator = torch.Generator().manual_seed(0)
    neg = torch.randn(5, 7, generator=generator)
    valid = torch.rand(5, 7, generator=generator) > 0.3
    weights = torch.rand(7, generator=generator)
    for importance in (None, weights):
        got = negative_violator_count(neg, valid, importance)
        for b in range(5):
            for k in (k for k in range(7) if valid[b, k]):  # invalid entries are never used
                expected = sum(
                    (1.0 if importance is None else float(importance[j]))
                    for j in range(7)
                    if j != k and valid[b, j] and neg[b, j] > neg[b, k]
                )
                assert got[b, k].item() == pytest.approx(expected, abs=1e-6)


def test_remove_hits_and_logq_sign():
    assert remove_accidental_hits(NEG, VALID)[1, 2].item() == MASK_VALUE
    corrected = sampling_probability_correction(torch.tensor([1.0, 1.0]), torch.log(torch.tensor([0.5, 0.01])))
    assert corrected[1] > corrected[0]  # rare items are boosted, frequent ones (over-sampled) discounted


def test_bpr_by_hand():
    pairs = [(2.0, 1.5), (2.0, 2.5), (2.0, -1.0), (0.5, 0.0), (0.5, 3.0)]
    expected = sum(_softplus(n - p) for p, n in pairs) / len(pairs)
    assert bpr_loss(POS, NEG, VALID).item() == pytest.approx(expected, rel=1e-6)


def test_sampled_softmax_by_hand():
    pos_log_q = torch.log(torch.tensor([0.1, 0.2]))
    neg_log_q = torch.log(torch.tensor([0.05, 0.3, 0.01]))
    total = 0.0
    for b in range(2):
        logits = [POS[b].item() - pos_log_q[b].item()]
        logits += [NEG[b, k].item() - neg_log_q[k].item() for k in range(3) if VALID[b, k]]
        total += -(logits[0] - math.log(sum(math.exp(x) for x in logits)))
    assert sampled_softmax_loss(POS, NEG, VALID, pos_log_q, neg_log_q).item() == pytest.approx(total / 2, rel=1e-6)


def test_uniform_logq_changes_nothing():
    uniform = torch.full((3,), -math.log(N_ITEMS))
    corrected = sampled_softmax_loss(POS, NEG, VALID, uniform[:2], uniform)
    plain = sampled_softmax_loss(POS, NEG, VALID, torch.zeros(2), torch.zeros(3))
    assert corrected.item() == pytest.approx(plain.item(), rel=1e-6)


@pytest.mark.parametrize("estimator", ["sampled", "scaled", "smoothed"])
def test_warp_by_hand(estimator):
    total = 0.0
    for b in range(2):
        m = int(VALID[b].sum())
        violators = [NEG[b, k].item() for k in range(3) if VALID[b, k] and NEG[b, k] + 1.0 > POS[b]]
        v = len(violators)
        rank = {
            "sampled": 1 + v,
            "scaled": 1 + v * (N_ITEMS - 1) / m,
            "smoothed": 1 + (N_ITEMS - 1) * (v + 1) / (m + 2),
        }
        phi = torch.digamma(torch.tensor(rank[estimator] + 1.0)).item() + 0.5772156649015329
        if estimator == "sampled":
            assert phi == pytest.approx(sum(1 / k for k in range(1, v + 2)), rel=1e-5)
        hinge = sum(max(0.0, 1.0 - POS[b].item() + s) for s in violators) / max(v, 1)
        total += phi * hinge
    assert warp_loss(POS, NEG, VALID, N_ITEMS, estimator).item() == pytest.approx(total / 2, rel=1e-5)


def test_warp_is_zero_without_violators():
    assert (
        warp_loss(torch.tensor([10.0]), torch.tensor([[0.0, 1.0]]), torch.ones(1, 2, dtype=torch.bool), 50).item() == 0
    )


@pytest.mark.parametrize("cutoff", [None, 30])
def test_lambdarank_by_hand(cutoff):
    def gain(rank: float) -> float:
        return 0.0 if cutoff is not None and rank > cutoff else _gain(rank)

    total = 0.0
    for b in range(2):
        valid = [k for k in range(3) if VALID[b, k]]
        m = len(valid)
        v = sum(NEG[b, k] > POS[b] for k in valid)
        g_pos = gain(1 + v * (N_ITEMS - 1) / m)
        for k in valid:
            v_k = sum(NEG[b, j] > NEG[b, k] for j in valid if j != k)
            r_k = (1.0 if POS[b] > NEG[b, k] else 0.0) + 1 + v_k * (N_ITEMS - 2) / (m - 1)
            total += abs(g_pos - gain(r_k)) * _softplus((NEG[b, k] - POS[b]).item())
    got = lambdarank_loss(POS, NEG, VALID, N_ITEMS, "scaled", cutoff)
    assert got.item() == pytest.approx(total / 2, rel=1e-5)


def test_lambda_weights_have_no_gradient_but_loss_does():
    pos = POS.clone().requires_grad_()
    neg = NEG.clone().requires_grad_()
    loss = lambdarank_loss(pos, neg, VALID, N_ITEMS, "posterior")
    loss.backward()
    assert pos.grad[0] < 0 and neg.grad[0, 1] > 0  # raise the positive, lower the violating negative
    assert neg.grad[1, 2] == 0  # the accidental hit gets nothing


@pytest.mark.parametrize("kind", ["lambdarank", "warp", "softmax", "bpr"])
def test_accidental_hits_do_not_matter(kind):
    loss = SampledBatchLoss(kind, N_ITEMS, "scaled")
    log_q = torch.full((3,), -math.log(N_ITEMS))
    moved = NEG.clone()
    moved[1, 2] = 50.0
    a = loss(POS, NEG, VALID, log_q[:2], log_q)
    b = loss(POS, moved, VALID, log_q[:2], log_q)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_lambda_weights_shape_and_masking():
    weights = lambda_weights(POS, NEG, VALID, N_ITEMS, "smoothed")
    assert weights.shape == (2, 3) and weights[1, 2] == 0 and torch.all(weights[VALID] > 0)


def test_sampled_batch_loss_rejects_misuse():
    with pytest.raises(ValueError, match="cutoff"):
        SampledBatchLoss("warp", N_ITEMS, cutoff=10)
    with pytest.raises(ValueError, match="n_items"):
        SampledBatchLoss("bpr", 1)


def test_popularity_sampling_uses_importance_weights():
    log_q = torch.log(torch.tensor([0.001, 0.5, 0.1]))
    plain = SampledBatchLoss("lambdarank", N_ITEMS, "scaled", "uniform")(POS, NEG, VALID, log_q[:2], log_q)
    weighted = SampledBatchLoss("lambdarank", N_ITEMS, "scaled", "popularity")(POS, NEG, VALID, log_q[:2], log_q)
    importance = torch.exp(-log_q) / (N_ITEMS - 1)
    expected = lambdarank_loss(POS, NEG, VALID, N_ITEMS, "scaled", None, importance)
    assert weighted.item() == pytest.approx(expected.item()) and weighted.item() != pytest.approx(plain.item())


@pytest.mark.parametrize("kind", ["lambdarank", "warp", "softmax", "bpr"])
@pytest.mark.parametrize("estimator", ["sampled", "scaled", "smoothed", "posterior"])
def test_a_row_whose_negatives_are_all_hits_adds_nothing(kind, estimator):
    """Small m makes this common for heavy users; scaled's 0/0 rank must not turn the loss into NaN."""
    loss = SampledBatchLoss(kind, N_ITEMS, estimator)
    log_q = torch.full((3,), -math.log(N_ITEMS))
    all_hits = torch.tensor([[True, True, True], [False, False, False]])
    pos, neg = POS.clone().requires_grad_(), NEG.clone().requires_grad_()
    both = loss(pos, neg, all_hits, log_q[:2], log_q)
    both.backward()
    first_only = loss(POS[:1], NEG[:1], all_hits[:1], log_q[:1], log_q)
    assert torch.isfinite(both) and torch.isfinite(pos.grad).all() and torch.isfinite(neg.grad).all()
    assert neg.grad[1].abs().sum() == 0
    if kind in ("lambdarank", "warp"):  # a mean over rows: the empty row adds 0 and halves the mean
        assert both.item() == pytest.approx(first_only.item() / 2, rel=1e-6)
