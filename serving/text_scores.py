"""Text -> item scores for candidate generation: how well the user's own words describe each movie.

`ITCTextScorer` uses the ILM's item-text contrastive (ITC) head, phase 1's text -> item retriever:
score(text, item) = max over the K query outputs q_k of the item of <f_text, q_k> (both L2-normalised),
the similarity ITC was trained with. Item features are computed once, at construction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

if TYPE_CHECKING:
    from ilm_model.modeling import ItemLanguageModel
    from retrieval.recommender import TwoTowerRecommender


class TextScorer(Protocol):
    """Anything that scores every catalogue movie for a piece of text."""

    def scores(self, text: str) -> np.ndarray:
        """`[n_items]` scores aligned with catalogue rows; higher = the text fits the movie better."""


class ITCTextScorer:
    """ITC scores of the ILM over the recommender's catalogue (`[n_items, K, d]` item features precomputed)."""

    def __init__(self, ilm: ItemLanguageModel, recommender: TwoTowerRecommender, batch_size: int = 256):
        self.ilm = ilm
        cf = torch.from_numpy(recommender.item_embeddings()).to(next(ilm.parameters()).device)
        self.item_features = ilm.represent_items(cf, batch_size).itc_features.float().cpu()

    @torch.inference_mode()
    def scores(self, text: str) -> np.ndarray:
        was_training = self.ilm.training
        self.ilm.eval()
        try:
            query = self.ilm.encode_text([text]).float().cpu()[0]  # [d]
        finally:
            self.ilm.train(was_training)
        return (self.item_features @ query).amax(dim=1).numpy().astype(np.float64)
