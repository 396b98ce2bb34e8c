"""Training objectives as small pure functions on tensors (shapes in brackets; B = batch, K = queries).

Phase 1: ITC (`max_query_similarity` -> `itc_loss`), ITG (`itg_loss`), ITM (`sample_hard_negatives` ->
`itm_loss`). Phase 2: `next_token_loss` over answer tokens.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def max_query_similarity(item_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """s[i, j] = max_k <q_ik, t_j>: item i's best-matching query against text j.

    item_features `[B_items, K, d]`, text_features `[B_texts, d]`, both L2-normalised (so this is a cosine);
    returns `[B_items, B_texts]`.
    """
    return torch.einsum("ikd,jd->ijk", item_features, text_features).amax(dim=-1)


def itc_loss(similarity: torch.Tensor, temperature: torch.Tensor | float) -> torch.Tensor:
    """Symmetric in-batch InfoNCE over an item-text similarity matrix `[B, B]` whose diagonal holds the pairs:

    L = 1/2 [ -1/B sum_i log softmax_j(s_ij / tau)[i]  -  1/B sum_j log softmax_i(s_ij / tau)[j] ].
    """
    logits = similarity / temperature
    targets = torch.arange(similarity.shape[0], device=similarity.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))


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
) -> torch.Tensor:
    """Item-grounded text generation: each real text token predicted from the causal state before it,

    L = -1/N sum_{b,t: m[b,t+1] = 1} log softmax(head(h[b,t]))[x[b,t+1]],

    text_states `[B, T, H]` from a causal pass, input_ids / attention_mask `[B, T]`, `head` maps `[N, H]` to
    logits `[N, V]`. The head only runs at the N predicting positions (the vocabulary projection dominates).
    """
    predicting = attention_mask[:, 1:].bool()
    logits = head(text_states[:, :-1][predicting])
    return F.cross_entropy(logits, input_ids[:, 1:][predicting])


def sample_hard_negatives(
    similarity: torch.Tensor, temperature: torch.Tensor | float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each item a negative text and for each text a negative item, drawn with probability
    p_ij proportional to exp(s_ij / tau) over j != i (BLIP-2's hard-negative mining).

    similarity `[B, B]` (item x text, diagonal = positives; no gradient needed). Returns
    (negative_text_of_item `[B]`, negative_item_of_text `[B]`) as indices into the batch.
    """
    logits = (similarity / temperature).float()
    off_diagonal = ~torch.eye(similarity.shape[0], dtype=torch.bool, device=similarity.device)
    weights_i2t = torch.softmax(logits, dim=1) * off_diagonal + 1e-12 * off_diagonal
    weights_t2i = torch.softmax(logits.t(), dim=1) * off_diagonal + 1e-12 * off_diagonal
    negative_text = torch.multinomial(weights_i2t, 1, generator=generator).squeeze(1)
    negative_item = torch.multinomial(weights_t2i, 1, generator=generator).squeeze(1)
    return negative_text, negative_item


def itm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Item-text matching: 2-way cross-entropy, L = -1/N sum_n log softmax(z_n)[y_n];
    logits `[N, 2]`, labels `[N]` with 1 = matching pair, 0 = mismatched."""
    return F.cross_entropy(logits, labels)
