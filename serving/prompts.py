"""The LLM prompt as an embeddings tensor: chat-template text with each candidate's soft tokens spliced in.

The chat template (system prompt, two worked example turns, then the user's message with the picks, then the
reply's opening clause from `serving.reply_opening`, which the LLM continues) is rendered as text with one
placeholder per candidate; the text pieces are embedded with `engine.embed_tokens` and each placeholder
becomes that item's K soft tokens from the ILM table,
followed by its description ("1. <K soft tokens> Toy Story (1995). Genres: Adventure, Animation"), the same
item text the ILM was trained on. Prompts are only ever built here, from catalogue ids: no client tensors.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jinja2.exceptions import TemplateError

from ilm_model.item_text import describe
from ilm_model.soft_tokens import SoftTokenTable
from retrieval.catalogue import Catalogue
from serving.dialogue import DialogueState, year_range_text
from serving.engines.base import LLMEngine
from serving.errors import ConfigurationError

INSTRUCTION = (
    "Reply with one short, friendly sentence that introduces the picks and connects them to what the user said. "
    "Do not list the movies: they are shown after your sentence."
)
SYSTEM_PROMPT = (
    "You are ilmrec, a friendly movie recommender. Each user message comes with the movies picked for them, "
    "each starting with its item tokens. " + INSTRUCTION
)
EXAMPLE_TURNS = (
    (
        "Picks:\n1. Monsters, Inc. (2001). Genres: Adventure, Animation, Children, Comedy\n"
        "2. Up (2009). Genres: Adventure, Animation, Drama\n3. Ratatouille (2007). Genres: Animation, Children, Comedy\n"
        "User: I loved Toy Story and Finding Nemo",
        "Since you liked Toy Story and Finding Nemo, here are a few more movies I think you will enjoy.",
    ),
    (
        "Picks:\n1. Se7en (1995). Genres: Mystery, Thriller\n2. Zodiac (2007). Genres: Crime, Drama, Thriller\n"
        "3. Prisoners (2013). Genres: Drama, Mystery, Thriller\n"
        "So far: they liked Toy Story (1995), Finding Nemo (2003); they want something darker; no Animation.\n"
        "User: something darker, not animated",
        "For something darker with no animation, here are a few picks I think you will like.",
    ),
)
"""Worked turns (text only) ahead of the real one, each reply starting as `serving.reply_opening` starts ours.
Without them SmolLM2-135M talks about the prompt ("The user's response is...") or starts a list; with only the
first, it answered follow-ups with "I think you might want to look at the movies I mentioned earlier" or a
title of its own (benchmarks/results/serving_profile.md). The replies name no genre, which the model would
copy to unrelated picks. They are constant, so their KV is reused from the previous turn (prefix caching) and
costs no prefill."""


@dataclass(frozen=True)
class EmbeddedPrompt:
    """`embeds` `[T, H]`; `item_rows[item_id]` is the first of that item's K soft-token rows."""

    embeds: torch.Tensor
    item_rows: dict[int, int]
    tokens_per_item: int

    @property
    def n_tokens(self) -> int:
        return int(self.embeds.shape[0])


def build_prompt(
    engine: LLMEngine,
    user_text: str,
    state: DialogueState,
    candidates: Sequence[int],
    catalogue: Catalogue,
    soft_tokens: SoftTokenTable,
    max_user_tokens: int = 128,
    opening: str = "",
) -> EmbeddedPrompt:
    """Embed the prompt asking the LLM to introduce `candidates` (catalogue ids) in reply to `user_text`; its
    reply starts with `opening` (`serving.reply_opening`), which the LLM continues."""
    if not candidates:
        raise ValueError("build_prompt needs at least one candidate")
    tokenizer = engine.tokenizer
    nonce = secrets.token_hex(8)
    markers = [f"<<item-{nonce}-{i}>>" for i in range(len(candidates))]
    lines = ["Picks:"]
    lines += [f"{n}. {marker} {describe(catalogue[item])}" for n, (marker, item) in
              enumerate(zip(markers, candidates), start=1)]
    context = _context(state, catalogue)
    if context:
        lines.append(context)
    lines.append(f"User: {_sanitise(_cut(user_text, tokenizer, max_user_tokens), tokenizer)}")
    rendered = _render(tokenizer, "\n".join(lines)) + opening

    rows = soft_tokens.lookup(list(candidates)).detach().float().cpu()
    if rows.ndim != 3 or rows.shape[0] != len(candidates) or rows.shape[2] != engine.hidden_size:
        raise ConfigurationError(
            f"soft tokens must be [{len(candidates)}, K, {engine.hidden_size}] (the LLM's hidden size), got "
            f"{list(rows.shape)}: the ILM table was built for a different LLM; retrain or load the matching one"
        )
    pieces: list[torch.Tensor] = []
    item_rows: dict[int, int] = {}
    offset = 0
    marker_index = {m: i for i, m in enumerate(markers)}
    for part in re.split(f"({re.escape('<<item-' + nonce)}-\\d+>>)", rendered):
        if part in marker_index:
            item_rows[int(candidates[marker_index[part]])] = offset
            piece = rows[marker_index[part]]
        elif part:
            piece = engine.embed_tokens(tokenizer(part, add_special_tokens=False)["input_ids"])
        else:
            continue
        pieces.append(piece)
        offset += piece.shape[0]
    return EmbeddedPrompt(torch.cat(pieces), item_rows, int(rows.shape[1]))


def _render(tokenizer, user_content: str) -> str:
    """The chat template over the system prompt, the example turns and `user_content`; templates without a
    system role get the system prompt inline, in the first example's user message."""
    turns = [{"role": role, "content": text} for example in EXAMPLE_TURNS
             for role, text in zip(("user", "assistant"), example)]
    turns.append({"role": "user", "content": user_content})
    try:
        return tokenizer.apply_chat_template([{"role": "system", "content": SYSTEM_PROMPT}, *turns], tokenize=False,
                                             add_generation_prompt=True)
    except TemplateError:
        turns[0] = {"role": "user", "content": f"{SYSTEM_PROMPT}\n\n{EXAMPLE_TURNS[0][0]}"}
        return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)


def _sanitise(text: str, tokenizer) -> str:
    """User text without the tokenizer's special-token strings (no role or turn injection) and on one line."""
    for special in sorted(set(tokenizer.all_special_tokens) | set(tokenizer.get_added_vocab()), key=len,
                          reverse=True):
        text = text.replace(special, "")
    return " ".join(text.split())


def _cut(text: str, tokenizer, max_tokens: int) -> str:
    """`text` cut to its first `max_tokens` tokens (never inside a character)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens]).rstrip("\ufffd")


def _context(state: DialogueState, catalogue: Catalogue) -> str:
    """One line summing up the dialogue state for the LLM."""
    parts = []
    if state.liked:
        parts.append("they liked " + ", ".join(catalogue[i].display_title for i in state.liked[-5:]))
    if state.disliked:
        parts.append("they disliked " + ", ".join(catalogue[i].display_title for i in state.disliked[-5:]))
    if state.mood:
        parts.append(f"they want something {state.mood}")
    if state.include_genres:
        parts.append("they asked for " + ", ".join(state.include_genres))
    if state.exclude_genres:
        parts.append("no " + ", ".join(state.exclude_genres))
    if state.year_min or state.year_max:
        parts.append(f"released {year_range_text(state)}")
    return ("So far: " + "; ".join(parts) + ".") if parts else ""

