"""The phase-2 multitask mix, built from MovieLens only (never from evaluation dialogues).

Three kinds of (instruction, answer) examples; every `{item}` of an instruction is one catalogue item that the
frozen LLM sees as its K soft tokens:
- describe: "Describe this movie: {item}" -> `describe(movie)`;
- next_item: "I liked {history}. Which movie should I watch next?" -> the title a user watched next;
- conversation: "I loved {history}. Can you suggest a {genre} movie ...?" -> a later title of that user with
  that genre (liked items as soft tokens, the constraint as text).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ilm_model.configuration import Phase2Config
from ilm_model.interactions import Interactions
from ilm_model.item_text import NO_GENRES, describe
from retrieval.catalogue import Catalogue

TaskKind = Literal["describe", "next_item", "conversation"]
HISTORY = "{history}"


@dataclass(frozen=True)
class TaskExample:
    """One training example: `instruction` holds one `{item}` per entry of `items` (catalogue rows, in order);
    `target` is the catalogue row the answer is about."""

    kind: TaskKind
    instruction: str
    items: tuple[int, ...]
    answer: str
    target: int


def history_placeholder(n: int) -> str:
    """`{item}`, `{item} and {item}`, `{item}, {item} and {item}`, ... for a history of n items."""
    if n < 1:
        raise ValueError("a history needs at least one item")
    slots = ["{item}"] * n
    return slots[0] if n == 1 else ", ".join(slots[:-1]) + " and " + slots[-1]


def describe_examples(catalogue: Catalogue, rows: Sequence[int], instruction: str) -> list[TaskExample]:
    """One describe example per catalogue row."""
    return [
        TaskExample("describe", instruction, (int(r),), describe(catalogue.movies[r]), int(r)) for r in rows
    ]


def _allowed_histories(interactions: Interactions, allowed: np.ndarray) -> list[np.ndarray]:
    return [h[allowed[h]] for h in interactions.histories]


def next_item_examples(
    catalogue: Catalogue,
    interactions: Interactions,
    allowed: np.ndarray,
    instruction: str,
    history_length: int,
    per_user: int,
    rng: np.random.Generator,
) -> list[TaskExample]:
    """Up to `per_user` examples per user: the `history_length` allowed items before position t -> item t
    (positions drawn without replacement; a target already in its history is skipped)."""
    text = instruction.replace(HISTORY, history_placeholder(history_length))
    out = []
    for h in _allowed_histories(interactions, allowed):
        if len(h) <= history_length:
            continue
        positions = rng.choice(np.arange(history_length, len(h)), size=min(per_user, len(h) - history_length),
                               replace=False)
        for t in np.sort(positions):
            before, target = h[t - history_length : t], int(h[t])
            if target in before:
                continue
            title = catalogue.movies[target].display_title
            out.append(TaskExample("next_item", text, tuple(int(r) for r in before), title, target))
    return out


def conversation_examples(
    catalogue: Catalogue,
    interactions: Interactions,
    allowed: np.ndarray,
    instruction: str,
    per_user: int,
    rng: np.random.Generator,
) -> list[TaskExample]:
    """Up to `per_user` examples per user: two consecutive liked items, then a later item of the same user as
    the answer, with one of its genres (drawn at random) as the text constraint."""
    text = instruction.replace(HISTORY, history_placeholder(2))
    out = []
    for h in _allowed_histories(interactions, allowed):
        if len(h) < 3:
            continue
        for t in np.sort(rng.choice(np.arange(2, len(h)), size=min(per_user, len(h) - 2), replace=False)):
            liked = (int(h[t - 2]), int(h[t - 1]))
            target = int(h[rng.integers(t, len(h))])
            genres = [g for g in catalogue.movies[target].genres if g != NO_GENRES]
            if target in liked or not genres:
                continue
            genre = genres[int(rng.integers(len(genres)))]
            out.append(TaskExample("conversation", text.replace("{genre}", genre), liked,
                                   catalogue.movies[target].display_title, target))
    return out


class TaskMix:
    """Example pools per task kind, sampled per step: a kind with probability proportional to its weight, then
    a uniform example of that kind."""

    def __init__(self, pools: dict[TaskKind, list[TaskExample]], weights: dict[TaskKind, float]):
        self.kinds = [k for k, w in weights.items() if w > 0]
        empty = [k for k in self.kinds if not pools.get(k)]
        if empty:
            raise ValueError(f"task kinds {empty} have a positive weight but no examples (no interactions given?)")
        self.pools = {k: pools[k] for k in self.kinds}
        self.probabilities = torch.tensor([weights[k] for k in self.kinds], dtype=torch.float64)

    def sample(self, batch_size: int, generator: torch.Generator) -> list[TaskExample]:
        kinds = torch.multinomial(self.probabilities, batch_size, replacement=True, generator=generator).tolist()
        out = []
        for k in kinds:
            pool = self.pools[self.kinds[k]]
            out.append(pool[int(torch.randint(len(pool), (1,), generator=generator))])
        return out


def build_task_mix(
    catalogue: Catalogue,
    config: Phase2Config,
    train_rows: np.ndarray,
    interactions: Interactions | None,
    seed: int,
) -> TaskMix:
    """The mix of `config` over `train_rows` only (held-out items appear in no example)."""
    allowed = np.zeros(len(catalogue), dtype=bool)
    allowed[train_rows] = True
    rng = np.random.default_rng(seed)
    pools: dict[TaskKind, list[TaskExample]] = {
        "describe": describe_examples(catalogue, train_rows, config.instruction)
    }
    if interactions is not None:
        pools["next_item"] = next_item_examples(
            catalogue, interactions, allowed, config.next_item_instruction, config.history_length,
            config.examples_per_user, rng,
        )
        pools["conversation"] = conversation_examples(
            catalogue, interactions, allowed, config.conversation_instruction, config.examples_per_user, rng
        )
    weights: dict[TaskKind, float] = {
        "describe": config.describe_weight,
        "next_item": config.next_item_weight,
        "conversation": config.conversation_weight,
    }
    return TaskMix(pools, weights)
