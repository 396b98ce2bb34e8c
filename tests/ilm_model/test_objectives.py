import math

import pytest
import torch

from ilm_model.objectives import (
    IGNORE_INDEX,
    duplicate_pair_mask,
    iic_loss,
    itc_loss,
    itg_loss,
    itm_loss,
    max_query_similarity,
    next_token_loss,
    pooled_features,
    sample_hard_negatives,
    uic_loss,
)


def test_max_query_similarity_brute_force():
    torch.manual_seed(0)
    items = torch.nn.functional.normalize(torch.randn(3, 4, 5), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(2, 5), dim=-1)
    expected = torch.tensor(
        [[max(float(items[i, k] @ texts[j]) for k in range(4)) for j in range(2)] for i in range(3)]
    )
    torch.testing.assert_close(max_query_similarity(items, texts), expected)


def test_itc_is_symmetric_infonce_by_hand():
    sim = torch.tensor([[0.9, 0.1, -0.2], [0.3, 0.5, 0.0], [0.2, 0.4, 0.7]])
    tau = 0.07
    n = 3
    e = [[math.exp(float(sim[i, j]) / tau) for j in range(n)] for i in range(n)]
    i2t = -sum(math.log(e[i][i] / sum(e[i][j] for j in range(n))) for i in range(n)) / n
    t2i = -sum(math.log(e[j][j] / sum(e[i][j] for i in range(n))) for j in range(n)) / n
    assert math.isclose(itc_loss(sim, tau).item(), 0.5 * (i2t + t2i), rel_tol=1e-5)
    assert math.isclose(itc_loss(sim, torch.tensor(tau)).item(), 0.5 * (i2t + t2i), rel_tol=1e-5)


def test_next_token_loss_by_hand():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6)
    labels = torch.tensor([[IGNORE_INDEX, 3, 5, IGNORE_INDEX], [IGNORE_INDEX, IGNORE_INDEX, 1, 2]])
    terms = []
    for b in range(2):
        for t in range(3):
            y = int(labels[b, t + 1])
            if y != IGNORE_INDEX:
                terms.append(-torch.log_softmax(logits[b, t], -1)[y].item())
    assert math.isclose(next_token_loss(logits, labels).item(), sum(terms) / len(terms), rel_tol=1e-5)


def test_itg_by_hand_ignores_padding():
    torch.manual_seed(0)
    states = torch.randn(2, 5, 3)
    head = torch.nn.Linear(3, 8)
    ids = torch.tensor([[1, 4, 6, 0, 0], [2, 3, 5, 7, 1]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    terms = [
        -torch.log_softmax(head(states[b, t]), -1)[ids[b, t + 1]]
        for b in range(2)
        for t in range(4)
        if mask[b, t + 1]
    ]
    torch.testing.assert_close(itg_loss(states, ids, mask, head), torch.stack(terms).mean())
    # equals next_token_loss on full logits with padding labelled -100
    full = next_token_loss(head(states), ids.masked_fill(mask == 0, IGNORE_INDEX))
    torch.testing.assert_close(itg_loss(states, ids, mask, head), full)


def test_itg_over_a_vocabulary_is_the_softmax_over_its_columns():
    torch.manual_seed(0)
    states = torch.randn(2, 4, 3)
    head = torch.nn.Linear(3, 10)
    ids = torch.tensor([[1, 7, 3, 0], [1, 3, 9, 7]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    vocabulary = torch.tensor([1, 3, 7, 9])
    terms = [
        -torch.log_softmax(head(states[b, t])[vocabulary], -1)[int((vocabulary == ids[b, t + 1]).nonzero())]
        for b in range(2)
        for t in range(3)
        if mask[b, t + 1]
    ]
    loss = itg_loss(states, ids, mask, lambda h: head(h)[:, vocabulary], vocabulary)
    torch.testing.assert_close(loss, torch.stack(terms).mean())
    with pytest.raises(ValueError, match="not in the vocabulary"):
        itg_loss(states, ids, mask, lambda h: head(h)[:, :3], torch.tensor([1, 3, 7]))


def test_hard_negatives_are_never_the_positive_and_follow_similarity():
    sim = torch.tensor([[1.0, 0.9, -1.0, -1.0], [0.9, 1.0, -1.0, -1.0], [-1.0, -1.0, 1.0, 0.8], [-1.0, -1.0, 0.8, 1.0]])
    gen = torch.Generator().manual_seed(0)
    draws_t, draws_i = zip(*(sample_hard_negatives(sim, 0.05, gen) for _ in range(50)))
    draws_t, draws_i = torch.stack(draws_t), torch.stack(draws_i)
    assert not (draws_t == torch.arange(4)).any() and not (draws_i == torch.arange(4)).any()
    # at tau=0.05 the near-duplicate (similarity 0.9 / 0.8) dominates: e^{(0.8+1)/0.05} ~ 4e15
    assert (draws_t == torch.tensor([1, 0, 3, 2])).all()
    assert (draws_i == torch.tensor([1, 0, 3, 2])).all()


def test_hard_negative_probabilities_are_softmax_off_diagonal():
    block = torch.tensor([[0.0, 0.0, math.log(3.0)], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    # 400 independent copies of the 3x3 problem; other blocks are e^-60 away, i.e. never drawn
    sim = torch.full((1200, 1200), -60.0)
    for b in range(400):
        sim[3 * b : 3 * b + 3, 3 * b : 3 * b + 3] = block
    negative_text, _ = sample_hard_negatives(sim, 1.0, torch.Generator().manual_seed(1))
    picks = negative_text[0::3] - torch.arange(0, 1200, 3)
    assert ((picks == 1) | (picks == 2)).all()
    share = (picks == 2).float().mean().item()  # item 0 of a block: p(text 2) = 3 / (1 + 3)
    assert abs(share - 0.75) < 0.07  # 3.2 standard errors at 400 draws


def test_itm_loss_by_hand():
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0], [0.5, 0.5]])
    labels = torch.tensor([1, 0, 0])
    expected = -(torch.log_softmax(logits, -1)[[0, 1, 2], labels]).mean()
    torch.testing.assert_close(itm_loss(logits, labels), expected)


def _brute_force_infonce(sim, tau, exclude):
    """Both directions by explicit sums, skipping excluded entries."""
    n = len(sim)
    e = [[math.exp(float(sim[i][j]) / tau) for j in range(n)] for i in range(n)]
    rows = -sum(math.log(e[i][i] / sum(e[i][j] for j in range(n) if not exclude[i][j])) for i in range(n)) / n
    cols = -sum(math.log(e[j][j] / sum(e[i][j] for i in range(n) if not exclude[i][j])) for j in range(n)) / n
    return 0.5 * (rows + cols)


def test_itc_exclude_drops_entries_from_both_softmaxes():
    sim = torch.tensor([[0.9, 0.8, -0.2], [0.3, 0.5, 0.0], [0.2, 0.4, 0.7]])
    exclude = torch.tensor([[False, True, False], [False, False, False], [False, False, False]])
    expected = _brute_force_infonce(sim.tolist(), 0.1, exclude.tolist())
    assert math.isclose(itc_loss(sim, 0.1, exclude).item(), expected, rel_tol=1e-5)
    assert not math.isclose(itc_loss(sim, 0.1).item(), expected, rel_tol=1e-3)


def test_pooled_features_by_hand():
    features = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[3.0, 4.0], [3.0, 4.0]]])
    expected = torch.tensor([[2**-0.5, 2**-0.5], [0.6, 0.8]])
    torch.testing.assert_close(pooled_features(features), expected)


def test_duplicate_pair_mask_by_hand():
    left, right = torch.tensor([1, 1, 2, 3]), torch.tensor([5, 6, 7, 5])
    expected = [[i != j and (left[i] == left[j] or right[i] == right[j]) for j in range(4)] for i in range(4)]
    assert duplicate_pair_mask(left, right).tolist() == expected
    assert duplicate_pair_mask(left, right).tolist()[0] == [False, True, False, True]


def test_iic_and_uic_match_brute_force_over_pooled_queries():
    torch.manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(4, 3, 5), dim=-1)
    b = torch.nn.functional.normalize(torch.randn(4, 3, 5), dim=-1)
    tau = 0.2

    def pooled(x, i):
        mean = [sum(float(x[i, k, d]) for k in range(3)) / 3 for d in range(5)]
        norm = math.sqrt(sum(v * v for v in mean))
        return [v / norm for v in mean]

    sim = [[sum(p * q for p, q in zip(pooled(a, i), pooled(b, j))) for j in range(4)] for i in range(4)]
    none = [[False] * 4 for _ in range(4)]
    assert math.isclose(iic_loss(a, b, tau).item(), _brute_force_infonce(sim, tau, none), rel_tol=1e-5)
    exclude = duplicate_pair_mask(torch.tensor([0, 0, 1, 2]), torch.tensor([3, 4, 5, 6]))
    expected = _brute_force_infonce(sim, tau, exclude.tolist())
    assert math.isclose(uic_loss(a, b, tau, exclude).item(), expected, rel_tol=1e-5)
    # a perfectly aligned batch of distinct pairs is far below chance log(B)
    assert iic_loss(a, a, 0.01).item() < 0.1 < math.log(4)
