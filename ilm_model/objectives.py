"""Training objectives as small pure functions on tensors (shapes in brackets; B = batch, K = queries).

Phase 1: ITC (`max_query_similarity` -> `itc_loss`), ITG (`itg_loss`), ITM (`sample_hard_negatives` ->
`itm_loss`), IIC (`pooled_features` -> `duplicate_pair_mask` -> `iic_loss`) and UIC (`uic_loss`).
Phase 2: `next_token_loss` over answer tokens.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
# excluded logits get this large finite constant (not -inf, which turns an all-excluded row into NaN)
MASK_VALUE = -1e9


def max_query_similarity(item_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """s[i, j] = max_k <q_ik, t_j>: item i's best-matching query against text j.

    item_features `[B_items, K, d]`, text_features `[B_texts, d]`, both L2-normalised (so this is a cosine);
    returns `[B_items, B_texts]`.
    """
    return torch.einsum("ikd,jd->ijk", item_features, text_features).amax(dim=-1)


def itc_loss(
    similarity: torch.Tensor, temperature: torch.Tensor | float, exclude: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric in-batch InfoNCE over an item-text similarity matrix `[B, B]` whose diagonal holds the pairs:

    L = 1/2 [ -1/B sum_i log softmax_j(s_ij / tau)[i]  -  1/B sum_j log softmax_i(s_ij / tau)[j] ].

    `exclude [B, B]` (bool, False on the diagonal) drops entries from both softmaxes, e.g. in-batch duplicates
    that are not negatives.
    """
    logits = similarity / temperature
    if exclude is not None:
        logits = logits.masked_fill(exclude, MASK_VALUE)
    targets = torch.arange(similarity.shape[0], device=similarity.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))


def pooled_features(features: torch.Tensor) -> torch.Tensor:
    """One vector per item from its K query features: z_i = normalize(1/K sum_k f_ik); `[B, K, d]` -> `[B, d]`."""
    return F.normalize(features.mean(dim=1), dim=-1)


def duplicate_pair_mask(left_ids: torch.Tensor, right_ids: torch.Tensor) -> torch.Tensor:
    """`[B, B]` bool, True at (i, j), i != j, where pair j shares its left or its right id with pair i.

    Such an entry is not a negative: if left_i = left_j then right_j is also a partner of left_i, and if
    right_i = right_j the column holds the positive itself. `left_ids`, `right_ids` `[B]`.
    """
    same = (left_ids[:, None] == left_ids[None, :]) | (right_ids[:, None] == right_ids[None, :])
    return same & ~torch.eye(len(left_ids), dtype=torch.bool, device=left_ids.device)


def iic_loss(
    item_features: torch.Tensor,
    partner_features: torch.Tensor,
    temperature: torch.Tensor | float,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """Item-item contrastive: pair i = (item a_i, co-interacted item b_i), e.g. consecutive items of one user.

    s_ij = <z(a_i), z(b_j)> with z = `pooled_features` of the query outputs `[B, K, d]`, then the symmetric
    InfoNCE of `itc_loss` (positives on the diagonal, other pairs' items as negatives, `exclude` dropped).
    """
    similarity = pooled_features(item_features) @ pooled_features(partner_features).t()
    return itc_loss(similarity, temperature, exclude)


def uic_loss(
    user_features: torch.Tensor,
    item_features: torch.Tensor,
    temperature: torch.Tensor | float,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """User-item contrastive: pair i = (user u_i, item v_i the user interacted with); the user side is the
    Q-Former's query outputs for the user's CF vector (e.g. the two-tower fold-in of the history).

    s_ij = <z(u_i), z(v_j)>, z = `pooled_features`, then the symmetric InfoNCE of `itc_loss`; as `iic_loss`
    with a user on the left.
    """
    return iic_loss(user_features, item_features, temperature, exclude)


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting token t+1 from position t, over labels != -100:

    L = -1/N sum_{b,t: y[b,t+1] != -100} log softmax(z[b,t])[y[b,t+1]];  logits `[B, T, V]`, labels `[B, T]`.
    """
    shifted = logits[:, :-1].reshape(-1, logits.shape[-1])
    return F.cross_entropy(shifted, labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)


def itg_loss(
    text_states: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    head: Callable[[torch.Tensor], torch.Tensor],
    vocabulary: torch.Tensor | None = None,
) -> torch.Tensor:
    """Item-grounded text generation: each real text token predicted from the causal state before it,

    L = -1/N sum_{b,t: m[b,t+1] = 1} log softmax_{v in V}(head(h[b,t]))[x[b,t+1]],

    text_states `[B, T, H]` from a causal pass, input_ids / attention_mask `[B, T]`, `head` maps `[N, H]` to
    logits `[N, |V|]`. V is the whole vocabulary, or the sorted token ids `vocabulary [|V|]` (which must hold
    every target) when the head only scores those. The head only runs at the N predicting positions (the
    vocabulary projection dominates).
    """
    predicting = attention_mask[:, 1:].bool()
    targets = input_ids[:, 1:][predicting]
    if vocabulary is not None:
        position = torch.searchsorted(vocabulary, targets).clamp(max=len(vocabulary) - 1)
        if not torch.equal(vocabulary[position], targets):
            raise ValueError("an ITG target token is not in the vocabulary; build it from these texts")
        targets = position
    logits = head(text_states[:, :-1][predicting])
    return F.cross_entropy(logits, targets)


def sample_hard_negatives(
    similarity: torch.Tensor, temperature: torch.Tensor | float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each item a negative text and for each text a negative item, drawn with probability
    p_ij proportional to exp(s_ij / tau) over j != i (BLIP-2's hard-negative mining).

    similarity `[B, B]` (item x text, diagonal = positives; no gradient needed). Returns
    (negative_text_of_item `[B]`, negative_item_of_text `[B]`) as indices into the batch, on similarity's device.
    The draws are made on the CPU with the CPU `generator`, so a seed gives the same negatives on any device
    (up to the device's float differences in `similarity`).
    """
    logits = (similarity / temperature).float().cpu()
    off_diagonal = ~torch.eye(similarity.shape[0], dtype=torch.bool, device="cpu")
    weights_i2t = torch.softmax(logits, dim=1) * off_diagonal + 1e-12 * off_diagonal
    weights_t2i = torch.softmax(logits.t(), dim=1) * off_diagonal + 1e-12 * off_diagonal
    negative_text = torch.multinomial(weights_i2t, 1, generator=generator).squeeze(1)
    negative_item = torch.multinomial(weights_t2i, 1, generator=generator).squeeze(1)
    return negative_text.to(similarity.device), negative_item.to(similarity.device)


def itm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Item-text matching: 2-way cross-entropy, L = -1/N sum_n log softmax(z_n)[y_n];
    logits `[N, 2]`, labels `[N]` with 1 = matching pair, 0 = mismatched."""
    return F.cross_entropy(logits, labels)
