"""The clause a reply opens with, written by the dialogue manager from what the turn changed.

The reply's sentence starts with a clause grounded in the dialogue state ("Since you liked Heat and
Goodfellas,", "For something darker with no animation,", "To start you off,") and the frozen LLM finishes it:
the clause is the start of the assistant's turn in the prompt, so the LLM continues it in the user's voice
(without it SmolLM2-135M often answered in the third person: "They want something darker."), and it is
streamed before the LLM's prefill, so the first words of a reply need no LLM time.

What the clause says, the first that applies:
1. movies liked in this turn: "Since you liked A and B,";
2. movies disliked in this turn: "Since A wasn't for you,";
3. a wish changed in this turn (tone, genres, genres ruled out, years): "For darker crime movies released
   1990-1999,", the whole wish as it now stands;
4. movies liked earlier: "Since you liked A and B," (the last two);
5. a wish from earlier: "For darker crime movies,";
6. nothing known yet: "To start you off," in the first turn, "For a few more ideas," later ("thanks!").
"""

from __future__ import annotations

from collections.abc import Sequence

from retrieval.catalogue import Catalogue
from serving.dialogue import DialogueState, year_range_text
from serving.linking import title_names

COLD_START = "To start you off,"
MORE_IDEAS = "For a few more ideas,"
GENRE_WORDS = {"Children": "children's", "Film-Noir": "film noir", "Sci-Fi": "sci-fi", "IMAX": "IMAX"}
"""MovieLens genres as a sentence says them (the rest: lower case)."""
MAX_NAMED = 2


def opening(before: DialogueState, after: DialogueState, catalogue: Catalogue) -> str:
    """The clause (ending in a comma) that opens the reply to the turn that took `before` to `after`."""
    liked_now = [i for i in after.liked if i not in before.liked]
    if liked_now:
        return f"Since you liked {_names(liked_now, catalogue)},"
    disliked_now = [i for i in after.disliked if i not in before.disliked]
    if disliked_now:
        verb = "wasn't" if len(disliked_now[:MAX_NAMED]) == 1 else "weren't"
        return f"Since {_names(disliked_now, catalogue)} {verb} for you,"
    wish = wish_phrase(after)
    if wish and wish != wish_phrase(before):
        return f"For {wish},"
    if after.liked:
        return f"Since you liked {_names(after.liked[-MAX_NAMED:], catalogue)},"
    if wish:
        return f"For {wish},"
    return COLD_START if before.turn == 0 else MORE_IDEAS


def wish_phrase(state: DialogueState) -> str:
    """The user's wish in words ("darker crime movies with no animation released 1990-1999"), "" when none."""
    genres = list(dict.fromkeys([*state.include_genres, *(g for gs in state.only_genres for g in gs)]))
    if not (genres or state.mood or state.exclude_genres or state.year_min or state.year_max):
        return ""
    if genres:
        phrase = " ".join(filter(None, [state.mood, join_words([_genre(g) for g in genres], "and"), "movies"]))
    else:
        phrase = f"something {state.mood}" if state.mood else "movies"
    if state.exclude_genres:
        phrase += f" with no {join_words([_genre(g) for g in state.exclude_genres], 'or')}"
    if state.year_min or state.year_max:
        phrase += f" released {year_range_text(state)}"
    return phrase


def _names(item_ids: Sequence[int], catalogue: Catalogue) -> str:
    """The first `MAX_NAMED` movies as people say them ("The Matrix", not "Matrix, The (1999)")."""
    return join_words([title_names(catalogue[i].title)[0] for i in item_ids[:MAX_NAMED]], "and")


def _genre(genre: str) -> str:
    return GENRE_WORDS.get(genre, genre.lower())


def join_words(words: Sequence[str], last: str = "and") -> str:
    """"A", "A and B", "A, B and C" (or `last`)."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + f" {last} " + words[-1]
