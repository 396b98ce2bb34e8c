"""LLM re-ranking of the dialogue manager's top candidates: the frozen LLM reads the session's liked movies as
ILM soft tokens in the phase-2 next-item prompt ("I liked {history}. Which movie should I watch next? ...")
and scores each candidate's display title; the score (optionally minus the title's prior under the same prompt
with the history slot left empty, a pointwise mutual information) is fused with the retrieval order.

Every re-ranked id is one of the given candidates, so the re-rank cannot leave the catalogue or undo filters.

`ChatService` does not call it: measured by `benchmarks.dialogue_ranking` on ReDial, it lowered Recall@1,
Recall@10 and NDCG@10 on the report split (`benchmarks/results/dialogue_ranking_rerank_report.md`). It stays
as the measured LLM step, for retrained or bigger ILMs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ilm_model.configuration import Phase2Config
from ilm_model.evaluation import score_candidates
from ilm_model.prompting import ItemPrompt
from ilm_model.soft_tokens import SoftTokenTable
from ilm_model.tasks import history_placeholder
from retrieval.catalogue import Catalogue

LLM_ONLY = math.inf
"""The fusion weight that orders by the LLM score alone (the retrieval order only breaks ties)."""


def fuse(llm_scores: np.ndarray | Sequence[float], weight: float) -> np.ndarray:
    """Positions `[N]` of the retrieval top-N in fused order, best first:

        s_i = z(r)_i + weight * z(l)_i,   r_i = 1 - i / N (retrieval rank score, i = 0 for the best),

    l = `llm_scores [N]` in retrieval order, z() standardises over the N (a constant vector gives 0). Ties keep
    the retrieval order; `weight` = `LLM_ONLY` sorts by l alone, weight 0 returns the retrieval order.
    """
    llm = np.asarray(llm_scores, dtype=np.float64)
    if llm.ndim != 1:
        raise ValueError(f"llm_scores must be one score per candidate, got shape {llm.shape}")
    if weight < 0 or math.isnan(weight):
        raise ValueError(f"the LLM weight must be >= 0 (or LLM_ONLY), got {weight}")
    positions = np.arange(len(llm))
    if math.isinf(weight):
        return np.lexsort((positions, -llm))
    fused = _standardise(1.0 - positions / max(1, len(llm))) + weight * _standardise(llm)
    return np.lexsort((positions, -fused))


class LLMReranker:
    """Scores and re-orders candidates with the frozen LLM, the prompts of the phase-2 next-item task.

    `prompts` is the `Phase2Config` the ILM was trained with: its `next_item_instruction`, `system_prompt`,
    `history_length` (liked items in the prompt, most recent ones) and `max_answer_tokens`.
    """

    def __init__(
        self,
        llm: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        soft_tokens: SoftTokenTable,
        catalogue: Catalogue,
        prompts: Phase2Config | None = None,
    ):
        if soft_tokens.hidden_size != llm.get_input_embeddings().embedding_dim:
            raise ValueError(f"the soft tokens are {soft_tokens.hidden_size} wide but the LLM's embeddings are "
                             f"{llm.get_input_embeddings().embedding_dim}; use the table built for this LLM")
        self.llm, self.tokenizer, self.soft_tokens, self.catalogue = llm, tokenizer, soft_tokens, catalogue
        self.prompts = prompts or Phase2Config()
        self._prompt_of: dict[int, ItemPrompt] = {}
        self._answer_of: dict[int, list[int]] = {}
        self._prior_of: dict[int, float] = {}

    def prompt(self, n_liked: int) -> ItemPrompt:
        """The next-item prompt with `n_liked` `{item}` slots (memoised)."""
        if n_liked not in self._prompt_of:
            instruction = self.prompts.next_item_instruction.replace("{history}", history_placeholder(n_liked))
            self._prompt_of[n_liked] = ItemPrompt.build(self.tokenizer, instruction, self.prompts.system_prompt)
        return self._prompt_of[n_liked]

    def history(self, liked: Sequence[int]) -> list[int]:
        """The liked items the prompt holds: the last `history_length`, oldest first."""
        return [int(i) for i in liked][-self.prompts.history_length :]

    @torch.inference_mode()
    def scores(self, liked: Sequence[int], candidate_ids: Sequence[int]) -> np.ndarray:
        """`[N]` mean log-probability per token of each candidate's display title (plus end of turn) after the
        next-item prompt with `self.history(liked)` as soft tokens; `liked` must not be empty."""
        history = self.history(liked)
        if not history:
            raise ValueError("LLM scores need at least one liked item to condition on")
        if len(candidate_ids) == 0:
            return np.zeros(0)
        prompt = self.prompt(len(history))
        blocks = list(self.soft_tokens.lookup(history))
        answers = [self._answer(int(i), prompt) for i in candidate_ids]
        return score_candidates(self.llm, prompt, blocks, answers).double().numpy()

    @torch.inference_mode()
    def prior_scores(self, candidate_ids: Sequence[int]) -> np.ndarray:
        """`[N]` the same mean log-probabilities with the one history slot left empty ("I liked . Which movie
        ..."): how likely the title is whatever the user liked; memoised by id (it does not depend on the session)."""
        missing = [int(i) for i in dict.fromkeys(int(c) for c in candidate_ids) if int(i) not in self._prior_of]
        if missing:
            prompt = self.prompt(1)
            empty = torch.zeros(0, self.soft_tokens.hidden_size)
            values = score_candidates(self.llm, prompt, [empty], [self._answer(i, prompt) for i in missing])
            self._prior_of.update(zip(missing, values.double().tolist(), strict=True))
        return np.array([self._prior_of[int(i)] for i in candidate_ids], dtype=np.float64)

    def rerank(
        self, liked: Sequence[int], candidate_ids: Sequence[int], weight: float, calibrated: bool = False
    ) -> list[int]:
        """`candidate_ids` (retrieval order, best first) in `fuse` order of `scores`, or with `calibrated` of
        `scores - prior_scores` (log p(title | liked) - log p(title), per token); unchanged without liked items."""
        if len(liked) == 0 or len(candidate_ids) < 2:
            return [int(i) for i in candidate_ids]
        llm = self.scores(liked, candidate_ids)
        if calibrated:
            llm = llm - self.prior_scores(candidate_ids)
        return [int(candidate_ids[p]) for p in fuse(llm, weight)]

    def _answer(self, item_id: int, prompt: ItemPrompt) -> list[int]:
        # every next-item prompt closes the answer the same way (one chat template), so titles are cached by id
        if item_id not in self._answer_of:
            title = self.catalogue[item_id].display_title
            self._answer_of[item_id] = prompt.answer_ids(self.tokenizer, title, self.prompts.max_answer_tokens)
        return self._answer_of[item_id]


def _standardise(values: np.ndarray) -> np.ndarray:
    """(x - mean) / std; 0 everywhere for a constant (or single) vector."""
    std = values.std()
    return (values - values.mean()) / std if len(values) > 1 and std > 0 else np.zeros_like(values)
