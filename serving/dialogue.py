"""Dialogue state: what the person likes, dislikes and wants, read turn by turn from what they write.

`update_state` reads one user message: linked movie mentions with their sentiment, genre constraints, a mood
and a year range. Constraints accumulate over turns; a later statement overrides an earlier contradiction
("no horror" after "a horror movie" drops Horror from the wanted genres). `candidates` turns the state into
catalogue ids: fold-in retrieval, hard filters, then soft boosts.

Rules (on normalised words; movie mentions are masked out first, so "Love Actually" says nothing about love):
- A clause ends at . , ; : ! ? or "but", "however", "though", "although", "whereas" ("anything but" is a
  negator instead).
- Sentiment of a mention: the nearest sentiment word in its clause decides, looking back first, then ahead
  ("I hated Toy Story and Finding Nemo": both disliked; "Toy Story was boring": disliked). A negator up to
  three words before a sentiment word flips it ("didn't like", "not a fan of", "not bad"; "can't stand"
  stays negative).
  No sentiment word at all means liked (people mostly name movies they want more of), except beside
  "already" ("I already saw Prisoners"): neutral. A seeing verb ("seen", "saw", "watched") in the clause also
  marks the movie seen.
- Earlier picks can be named by position: "the second one", "that 2nd movie", "the last one", "the first and
  third ones", "the first two", "number 3", "#2", "option 2" refer to the last list of recommendations shown
  (`DialogueState.shown`) and count as mentions, with the sentiment of their clause ("another one like the
  second": liked; "I've seen the third one": seen; "the last one was boring": disliked).
- A genre word is excluded when a negator ("not", "no", "without", "nothing", "avoid", "except", "less",
  "don't", "hate", ...) is up to four words before it in its clause, otherwise included.
- "only comedies", "just comedies", "nothing but comedies", "comedies only" are a hard filter (`only_genres`)
  that lasts until the person changes it: another "only" statement replaces it, "any genre" clears it,
  "doesn't have to be a comedy" or "no comedies" takes the genre out (`genre_constraints`). "Something funny"
  and "a comedy" stay soft requests.
- Mood words: "darker", "grittier", "scarier", "serious", ... -> darker; "lighter", "funnier", "happier",
  "feel-good", ... -> lighter; negated ("not too dark") -> the opposite mood.
- Years: "after 2000" (2001-), "since 2000" (2000-), "before 1990" (-1989), "until 1990" (-1990),
  "between 1990 and 2000", a decade ("from the 90s", "1980s", "the nineties"). A negator right before
  flips the cue ("nothing before 2000" = 2000-, "not after 1990" = -1990). A new bound replaces the same
  bound; a bound that contradicts the other one drops it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from retrieval.catalogue import Catalogue, Movie
from retrieval.errors import UnknownItemError
from retrieval.recommender import Recommender
from serving.config import RankingConfig
from serving.conversation_prior import SparseCounts, WordCues, cue_words
from serving.linking import Mention, TitleLinker, normalise, tokenise

STATE_VERSION = 2
TEXT_MEMORY = 3
TEXT_MEMORY_CHARS = 500

Mood = Literal["darker", "lighter"]
Sentiment = Literal["liked", "disliked", "neutral"]

FeedbackKind = Literal["like", "dislike", "seen", "not_interested"]
"""A person's verdict on one movie, given outside the text (the UI's card buttons), see `apply_feedback`."""

MOOD_GENRES: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    # mood: (genres it prefers, genres it pushes away)
    "darker": (
        frozenset({"Thriller", "Crime", "Horror", "Mystery", "Film-Noir", "War"}),
        frozenset({"Children", "Animation", "Comedy"}),
    ),
    "lighter": (
        frozenset({"Children", "Animation", "Comedy"}),
        frozenset({"Thriller", "Crime", "Horror", "Mystery", "Film-Noir", "War"}),
    ),
}

GENRE_WORDS: dict[tuple[str, ...], tuple[str, ...]] = {
    **{(w,): ("Action",) for w in ("action",)},
    **{(w,): ("Adventure",) for w in ("adventure", "adventures", "adventurous")},
    **{(w,): ("Animation",) for w in ("animated", "animation", "cartoon", "cartoons", "anime", "pixar")},
    **{(w,): ("Children",) for w in ("kids", "kid", "children", "childrens", "family")},
    **{(w,): ("Comedy",) for w in ("comedy", "comedies", "comedic", "funny", "hilarious")},
    **{(w,): ("Crime",) for w in ("crime", "gangster", "gangsters", "mafia", "mob", "heist", "heists")},
    **{(w,): ("Documentary",) for w in ("documentary", "documentaries")},
    **{(w,): ("Drama",) for w in ("drama", "dramas", "dramatic")},
    **{(w,): ("Fantasy",) for w in ("fantasy", "magical")},
    **{(w,): ("Film-Noir",) for w in ("noir",)},
    **{(w,): ("Horror",) for w in ("horror", "horrors", "scary", "spooky", "slasher", "slashers")},
    **{(w,): ("Musical",) for w in ("musical", "musicals")},
    **{(w,): ("Mystery",) for w in ("mystery", "mysteries", "whodunit", "whodunnit")},
    **{(w,): ("Romance",) for w in ("romance", "romances", "romantic")},
    **{(w,): ("Romance", "Comedy") for w in ("romcom", "romcoms")},
    **{(w,): ("Sci-Fi",) for w in ("scifi",)},
    **{(w,): ("Thriller",) for w in ("thriller", "thrillers", "suspense", "suspenseful")},
    **{(w,): ("War",) for w in ("war",)},
    **{(w,): ("Western",) for w in ("western", "westerns")},
    **{(w,): ("IMAX",) for w in ("imax",)},
    ("sci", "fi"): ("Sci-Fi",),
    ("science", "fiction"): ("Sci-Fi",),
    ("film", "noir"): ("Film-Noir",),
    ("rom", "com"): ("Romance", "Comedy"),
    ("rom", "coms"): ("Romance", "Comedy"),
    ("love", "story"): ("Romance",),
    ("love", "stories"): ("Romance",),
}
MOOD_WORDS: dict[tuple[str, ...], Mood] = {
    **{(w,): "darker" for w in (
        "dark", "darker", "darkest", "grim", "grimmer", "gritty", "grittier", "bleak", "bleaker", "serious",
        "intense", "edgy", "edgier", "disturbing", "scarier", "creepier", "creepy", "sinister", "heavier",
    )},
    **{(w,): "lighter" for w in (
        "light", "lighter", "funnier", "fun", "happy", "happier", "cheerful", "uplifting", "lighthearted",
        "wholesome", "upbeat", "heartwarming", "silly", "sillier", "feelgood",
    )},
    ("feel", "good"): "lighter",
    ("light", "hearted"): "lighter",
}
NEGATORS = frozenset(
    "not no without nothing never avoid except non nor neither less skip isnt wasnt arent dont doesnt didnt "
    "cant cannot couldnt wont wouldnt hate hated hates dislike disliked sick tired enough".split()
)
POSITIVE = frozenset(
    "loved love loves liked like likes enjoyed enjoy adore adored great fan favorite favourite amazing awesome "
    "fantastic brilliant good best beautiful".split()
)
NEGATIVE = frozenset(
    "hated hate hates disliked dislike despise despised loathe loathed terrible awful boring bad sucked sucks "
    "overrated worst disappointing annoying bored meh stand".split()
)
SEEING = frozenset("seen saw watched rewatched".split())
NEUTRAL_CUES = frozenset({"already"})
NEGATION_PROOF = frozenset({"stand"})  # "can't stand": the negator is part of the phrase, never a flip
CLAUSE_WORDS = frozenset({"but", "however", "though", "although", "whereas"})
_SENTENCE_TAIL = re.compile(r"[^.!?\n]*([.!?\n]|$)")
_CLAUSE_PUNCT = re.compile(r"[.,;:!?\n]")
NEGATION_WINDOW_GENRE = 4
NEGATION_WINDOW_SENTIMENT = 3

GenreKind = Literal["wanted", "unwanted", "only", "optional", "any"]
"""What a genre statement says: asked for (soft), ruled out (hard), nothing else (hard, "only comedies"), not
required ("doesn't have to be a comedy"), or no genre preference at all ("any genre")."""
ONLY_CUES = frozenset("only just exclusively strictly solely purely".split())
ONLY_GAP = frozenset("a an the some good movies films movie film".split())
"""Words allowed between "just" and its genre ("just a comedy")."""
ONLY_VERB_GAP = ONLY_GAP | frozenset("i want wanna like love enjoy watch see do to me show give recommend suggest "
                                     "into".split())
"""Words allowed between the other cues and their genre ("I only watch comedies")."""
NOT_A_CUE_AFTER = frozenset("the my your his her our their one".split())  # "the only comedy I liked"
ONLY_AFTER: tuple[tuple[str, ...], ...] = (("only",), ("and", "nothing", "else"), ("nothing", "else"))
ONLY_TAIL = frozenset("movies films movie film ones please".split())
"""Words allowed between a genre and a cue after it ("comedy movies only")."""
ONLY_JOINERS = frozenset("or and nor".split())
"""Join alternatives inside one "only" statement ("only comedies or dramas")."""
RELAX_PHRASES: tuple[tuple[str, ...], ...] = (
    ("have", "to", "be"), ("has", "to", "be"), ("need", "to", "be"), ("needs", "to", "be"), ("necessarily",),
    ("neednt", "be"),
)
"""Negated ("doesn't have to be", "not necessarily"; "needn't be" by itself), right before a genre: not required."""
RELAX_GAP = frozenset("a an the only just all any of some".split())
ANY_GENRE: dict[tuple[str, ...], bool] = {phrase: True for phrase in (
    ("any", "genre"), ("any", "genres"), ("all", "genres"), ("every", "genre"), ("whatever", "genre"),
    ("genre", "doesnt", "matter"), ("genres", "dont", "matter"), ("dont", "care", "about", "genre"),
    ("dont", "care", "about", "the", "genre"), ("any", "kind", "of", "movie"), ("any", "kind", "of", "movies"),
    ("any", "type", "of", "movie"), ("no", "genre", "preference"),
)}

_DECADE_WORDS = {
    "twenties": 1920, "thirties": 1930, "forties": 1940, "fifties": 1950, "sixties": 1960,
    "seventies": 1970, "eighties": 1980, "nineties": 1990, "noughties": 2000,
}
_ORDINALS = {"first": 1, "1st": 1, "second": 2, "2nd": 2, "third": 3, "3rd": 3, "fourth": 4, "4th": 4,
             "fifth": 5, "5th": 5, "sixth": 6, "6th": 6, "seventh": 7, "7th": 7, "eighth": 8, "8th": 8,
             "ninth": 9, "9th": 9, "tenth": 10, "10th": 10, "last": -1, "final": -1}
_COUNTS = {"two": 2, "three": 3, "four": 4, "five": 5, "2": 2, "3": 3, "4": 4, "5": 5}
_ORDINAL = "|".join(sorted(_ORDINALS, key=len, reverse=True))
_ORDINAL_WORD = re.compile(rf"\b(?:{_ORDINAL})\b", re.I)
_ORDINAL_REF = re.compile(
    # "the second one", "that 2nd movie", "the first and third ones", "the last." ...
    rf"\b(?:the|that|this|your)\s+(?P<ordinals>(?:{_ORDINAL})"
    rf"(?:\s*(?:,|&|\band\b|\bor\b)\s*(?:the\s+)?(?:{_ORDINAL}))*)"
    r"(?:\s+(?:one|ones|movie|movies|film|films|pick|picks|suggestion|suggestions|recommendation|recommendations)\b"
    r"|(?=\s*(?:[.,;:!?)]|$|\s+(?:and|but|or|please|too|sounds?|looks?|is|was|seems?|also)\b)))"
    # "number 2", "#2", "no. 2", "option 2"
    r"|(?<!\w)(?:number|no\.|#|option)\s*(?P<number>1\d|20|[1-9])\b"
    # "the first two", "the last three", "the top 3"
    r"|\b(?:the|those)\s+(?P<end>first|last|top)\s+(?P<count>two|three|four|five|[2-5])\b",
    re.I,
)
_LISTED_TITLE = re.compile(r"^\s*\d{1,2}\.\s+(.+?\(\d{4}\)|[^:\n]+?):\s", re.M)
"""The title of one line of a reply's numbered list, "2. Heat (1995): Shares Crime with ..." (service.py)."""
_NEGATED_CUES = {"after": "until", "post": "until", "newer than": "until", "since": "before", "before": "since",
                 "pre": "since", "prior to": "since", "older than": "since", "until": "after", "till": "after"}
_YEAR_NEGATED = re.compile(r"\b(?:not|no|nothing|none|never|nope)(?:\s+\w+)?\s*$", re.I)
_YEAR_OR_DECADE = r"(?:(?:the\s+)?(?:'?(\d\d)'?s|(\d{4})'?s|(\d{4}))|(?:the\s+)?(" + "|".join(_DECADE_WORDS) + "))"
_AFTER = re.compile(r"\b(after|since|post|newer than)\s+" + _YEAR_OR_DECADE, re.I)
_BEFORE = re.compile(r"\b(before|until|till|pre|prior to|older than)\s+" + _YEAR_OR_DECADE, re.I)
_BETWEEN = re.compile(r"\bbetween\s+(\d{4})\s+and\s+(\d{4})\b", re.I)
_DECADE = re.compile(
    r"(?<![\w'])(?:'?(\d\d)'?s|(\d{4})'?s|(" + "|".join(_DECADE_WORDS) + r"))\b", re.I
)


class DialogueState(BaseModel):
    """Everything the recommender needs to know about one conversation. Catalogue ids throughout."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[2] = Field(STATE_VERSION, description="Schema version; bump on incompatible changes. "
                                "Version 1 (no `only_genres`) reads as version 2.")
    turn: int = Field(0, ge=0, description="User messages read so far.")
    liked: list[int] = Field(default_factory=list, description="Mentioned with positive or no sentiment.")
    disliked: list[int] = Field(default_factory=list, description="Mentioned with negative sentiment.")
    neutral: list[int] = Field(default_factory=list, description='Mentioned without a verdict ("I already saw X").')
    mentioned: list[int] = Field(default_factory=list, description="Every movie the user named, in order.")
    include_genres: list[str] = Field(default_factory=list, description="Genres asked for (soft boost).")
    exclude_genres: list[str] = Field(default_factory=list, description="Genres ruled out (hard filter).")
    only_genres: list[list[str]] = Field(
        default_factory=list, description='Hard genre filter ("only comedies"): every pick has all the genres of '
        'at least one of these sets ("only romantic comedies or westerns" = [[Romance, Comedy], [Western]]); '
        "empty: no such filter.",
    )
    mood: Mood | None = Field(None, description="Preferred tone (soft boost and push-away).")
    year_min: int | None = Field(None, description="Earliest release year wanted (inclusive).")
    year_max: int | None = Field(None, description="Latest release year wanted (inclusive).")
    recommended: list[int] = Field(default_factory=list, description="Everything already recommended.")
    user_texts: list[str] = Field(default_factory=list, description=f"The last {TEXT_MEMORY} user messages, each "
                                  f"cut to {TEXT_MEMORY_CHARS} characters (the text->item query).")
    shown: list[int] = Field(default_factory=list, description='The last turn\'s picks, in order ("the second one").')
    seen: list[int] = Field(default_factory=list, description="Marked as already watched (never recommended).")

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: object) -> object:
        """A version-1 state (stored before `only_genres` existed) is the same state at version 2."""
        if isinstance(data, dict) and data.get("version") == 1:
            return {**data, "version": STATE_VERSION}
        return data


def update_state(state: DialogueState, user_text: str, linker: TitleLinker, catalogue: Catalogue) -> DialogueState:
    """The state after reading one more user message (the input state is not modified)."""
    mentions = references(user_text, linker.find(user_text), state.shown)
    lists: dict[Sentiment, list[int]] = {"liked": list(state.liked), "disliked": list(state.disliked),
                                         "neutral": list(state.neutral)}
    mentioned, seen = list(state.mentioned), list(state.seen)
    for mention, (sentiment, watched) in zip(mentions, _verdicts(user_text, mentions)):
        for name, items in lists.items():
            if name != sentiment and mention.item_id in items:
                items.remove(mention.item_id)
        if mention.item_id not in lists[sentiment]:
            lists[sentiment].append(mention.item_id)
        if mention.item_id not in mentioned:
            mentioned.append(mention.item_id)
        if watched and mention.item_id not in seen:
            seen.append(mention.item_id)

    masked = _mask(user_text, mentions)
    include, exclude, only = genre_constraints(state, masked, catalogue.genres())
    mood = mood_statement(masked) or state.mood
    year_min, year_max = year_bounds(masked, state.year_min, state.year_max)
    return state.model_copy(
        update=dict(
            turn=state.turn + 1, liked=lists["liked"], disliked=lists["disliked"], neutral=lists["neutral"],
            mentioned=mentioned, seen=seen, include_genres=include,
            user_texts=[*state.user_texts, user_text[:TEXT_MEMORY_CHARS]][-TEXT_MEMORY:],
            exclude_genres=exclude, only_genres=only, mood=mood, year_min=year_min, year_max=year_max,
        )
    )


def genre_constraints(
    state: DialogueState, text: str, known: Sequence[str]
) -> tuple[list[str], list[str], list[list[str]]]:
    """(include_genres, exclude_genres, only_genres) after the genre statements of `text`, in order.

    A later statement wins: "wanted" moves a genre to the included (soft), "unwanted" to the excluded (hard)
    and out of every "only" set (a set left empty goes; "only romcoms" then "no comedy" = only Romance).
    The first "only" statement of a message replaces the earlier "only" sets (their genres leave the included
    ones), and its genres are included too (the boost ranks picks that have all of them first). "optional"
    takes a genre out of the included and out of the "only" sets, lifting the filter when a set is left empty
    ("only comedies", then "doesn't have to be a comedy"); "any" clears the included and the "only" sets
    (exclusions stay).
    """
    include, exclude = list(state.include_genres), list(state.exclude_genres)
    only = [list(group) for group in state.only_genres]
    replaced = False
    for genres, kind in genre_statements(text):
        resolved = list(dict.fromkeys(filter(None, (_resolve_genre(g, known) for g in genres))))
        if kind == "any":
            include, only = [], []
        elif not resolved:
            continue
        elif kind == "only":
            if not replaced:
                include = [g for g in include if not any(g in group for group in only)]
                only, replaced = [], True
            if resolved not in only:
                only.append(resolved)
            for genre in resolved:
                _move(genre, to=include, away=exclude)
        elif kind == "optional":
            include = [g for g in include if g not in resolved]
            reduced = [[g for g in group if g not in resolved] for group in only]
            only = [] if any(not group for group in reduced) else reduced
        else:
            to, away = (include, exclude) if kind == "wanted" else (exclude, include)
            for genre in resolved:
                _move(genre, to=to, away=away)
            if kind == "unwanted":
                only = [reduced for group in only if (reduced := [g for g in group if g not in resolved])]
    return include, exclude, only


def read_history(
    messages: Iterable[tuple[str, str]], linker: TitleLinker, catalogue: Catalogue
) -> DialogueState:
    """The state a whole (role, text) history builds: user messages update it; the movies an assistant message
    recommends count as recommended and, from the last one that recommends any, as shown. Those are the
    numbered list of one of our own replies ("1. Heat (1995): ...", display titles), in its order, when it
    has one (the notes before it may name other movies), else every movie the message names."""
    state = DialogueState()
    for role, text in messages:
        if role == "user":
            state = update_state(state, text, linker, catalogue)
        elif role == "assistant":
            listed = [linker.displayed(title) for title in _LISTED_TITLE.findall(text)]
            named = [i for i in listed if i is not None] or [m.item_id for m in linker.find(text)]
            shown = list(dict.fromkeys(named))
            if shown:
                state = state.model_copy(update={"recommended": list(dict.fromkeys(state.recommended + shown)),
                                                 "shown": shown})
    return state


def apply_feedback(state: DialogueState, item_id: int, kind: FeedbackKind) -> DialogueState:
    """The state after a verdict on `item_id` (the input state is not modified).

    "like" puts the movie in `liked` (folded in with weight +1 from the next turn on); "dislike" and
    "not_interested" put it in `disliked` (pushed away); a later verdict replaces an earlier one, as in
    `update_state`. "seen" adds it to `seen`, which only excludes it. Every kind keeps it from being
    recommended again.
    """
    liked, disliked, seen = list(state.liked), list(state.disliked), list(state.seen)
    neutral = [i for i in state.neutral if i != item_id or kind == "seen"]
    if kind == "like":
        _move(item_id, to=liked, away=disliked)
    elif kind in ("dislike", "not_interested"):
        _move(item_id, to=disliked, away=liked)
    elif item_id not in seen:
        seen.append(item_id)
    return state.model_copy(update=dict(liked=liked, disliked=disliked, neutral=neutral, seen=seen))


def references(text: str, mentions: Sequence[Mention], shown: Sequence[int]) -> list[Mention]:
    """`mentions` plus the earlier picks named by position, in text order: "the second one" = `shown[1]`, "the
    last one" = `shown[-1]`, "the first and third ones", "#2", "option 2", "the first two" (two mentions
    sharing one span). A position names the pick even where the linker saw a title in the same words ("the
    last one" is not The Last Song); positions beyond `shown` name nothing."""
    if not shown:
        return list(mentions)
    found: list[Mention] = []
    for match in _ORDINAL_REF.finditer(text):
        spans: list[tuple[int, int, list[int]]] = []  # (start, end, positions)
        if match["ordinals"]:
            for word in _ORDINAL_WORD.finditer(text, match.start("ordinals"), match.end("ordinals")):
                spans.append((word.start(), word.end(), [_ORDINALS[word[0].lower()]]))
            spans[0] = (match.start(), *spans[0][1:])
            spans[-1] = (spans[-1][0], match.end(), spans[-1][2])
        else:
            count = _COUNTS[match["count"].lower()] if match["count"] else 0
            positions = ([int(match["number"])] if match["number"] else
                         list(range(-count, 0)) if match["end"].lower() == "last" else list(range(1, count + 1)))
            spans.append((match.start(), match.end(), positions))
        for start, end, positions in spans:
            for position in positions:
                if -len(shown) <= position <= len(shown) and position != 0:
                    item = shown[position - 1] if position > 0 else shown[position]
                    found.append(Mention(item_id=item, surface=text[start:end], start=start, end=end, score=1.0))
    found += [m for m in mentions if not any(r.start < m.end and m.start < r.end for r in found)]
    return sorted(found, key=lambda m: m.start)


def _verdicts(text: str, mentions: Sequence[Mention]) -> list[tuple[Sentiment, bool]]:
    """(sentiment, seen) of each mention; mentions sharing a span ("the first two") share one verdict."""
    spans = list(dict.fromkeys((m.start, m.end) for m in mentions))
    first = [next(m for m in mentions if (m.start, m.end) == span) for span in spans]
    verdicts = dict(zip(spans, zip(mention_sentiments(text, first), mention_seen(text, first))))
    return [verdicts[(m.start, m.end)] for m in mentions]


def mention_sentiments(text: str, mentions: Sequence[Mention]) -> list[Sentiment]:
    """For each mention, liked, disliked or neutral; see the module docstring."""
    words, clauses, owner = _words(text, mentions)
    result: list[Sentiment] = []
    for index, positions in enumerate(_positions(owner, len(mentions))):
        if not positions:
            result.append("liked")
            continue
        first, last = positions[0], positions[-1]
        clause = clauses[first]
        behind = [i for i in range(first - 1, -1, -1) if clauses[i] == clause and owner[i] is None]
        ahead = [i for i in range(last + 1, len(words)) if clauses[i] == clause and owner[i] is None]
        verdict = _sentiment(words, clauses, behind) if behind else None
        if verdict is None and ahead:
            verdict = _sentiment(words, clauses, ahead)
        if verdict is None and behind and words[behind[0]] in NEGATORS:  # "I loved A, but not B": B gets the
            earlier = [i for i in range(first - 1, -1, -1) if owner[i] is None]  # opposite of the last verdict
            prior = _sentiment(words, clauses, earlier)
            verdict = not prior if prior is not None else False
        if verdict is None:
            result.append("neutral" if any(words[i] in NEUTRAL_CUES for i in behind + ahead) else "liked")
        else:
            result.append("liked" if verdict else "disliked")
    return result


def mention_seen(text: str, mentions: Sequence[Mention]) -> list[bool]:
    """For each mention, whether its clause says the person watched it ("I've seen X", "saw X already")."""
    words, clauses, owner = _words(text, mentions)
    result = []
    for positions in _positions(owner, len(mentions)):
        clause = clauses[positions[0]] if positions else None
        asked = _SENTENCE_TAIL.match(text, mentions[len(result)].end)
        result.append(any(w in SEEING and c == clause and o is None for w, c, o in zip(words, clauses, owner))
                      and not (asked and asked[1] == "?"))  # "have you seen X?" asks, it does not say
    return result


def genre_statements(text: str) -> list[tuple[tuple[str, ...], GenreKind]]:
    """(genres, kind) for each genre statement in text order (see `GenreKind`).

    Genre phrases right next to each other form one set ("romantic comedies" = Romance and Comedy). A set is
    "only" after a cue ("only", "just", "nothing but", "exclusively", ...; "I only watch comedies") or before
    one ("comedies only", "comedies and nothing else"); "or"/"and" join alternative sets into the same
    "only" statement ("only comedies or dramas"). A negated cue ("not just comedies") or a negated "have to
    be" ("doesn't have to be a comedy") makes the set "optional". Otherwise each phrase is "unwanted" when a
    negator is up to four words before it in its clause, else "wanted". "any genre", "whatever genre", ...
    give ((), "any").
    """
    words, clauses, _ = _words(text, ())
    found: list[tuple[int, tuple[str, ...], GenreKind]] = [(start, (), "any") for start, _, _ in
                                                            _phrases(words, ANY_GENRE)]
    sets = _adjacent_sets(_phrases(words, GENRE_WORDS))
    open_only = None  # end of the last set of an "only" statement that a joiner may continue
    for start, end, genres, phrase_starts in sets:
        gap = words[open_only:start] if open_only is not None else []
        if set(gap) & ONLY_JOINERS and set(gap) <= ONLY_JOINERS | ONLY_GAP:
            kind: GenreKind = "only"
        elif _relaxed(words, clauses, start):
            kind = "optional"
        elif (cue := _only_cue(words, clauses, start)) is not None:
            kind = "optional" if cue else "only"
        elif _only_after(words, clauses, start, end):
            kind = "only"
        else:
            for phrase_start, phrase in phrase_starts:
                negated = _negated(words, clauses, phrase_start, NEGATION_WINDOW_GENRE)
                found.append((phrase_start, phrase, "unwanted" if negated else "wanted"))
            open_only = None
            continue
        found.append((start, genres, kind))
        open_only = end if kind == "only" else None
    return [(genres, kind) for _, genres, kind in sorted(found, key=lambda f: f[0])]


def mood_statement(text: str) -> Mood | None:
    """The last mood expressed in `text` (negation flips it), or None."""
    words, clauses, _ = _words(text, ())
    mood: Mood | None = None
    for start, _, said in _phrases(words, MOOD_WORDS):
        negated = _negated(words, clauses, start, NEGATION_WINDOW_GENRE)
        mood = ("lighter" if said == "darker" else "darker") if negated else said
    return mood


def year_bounds(text: str, year_min: int | None, year_max: int | None) -> tuple[int | None, int | None]:
    """Update (year_min, year_max) with the year constraints stated in `text`, in order."""
    events: list[tuple[int, int | None, int | None]] = []  # (position, new min, new max)
    spans: list[tuple[int, int]] = []
    for match in _BETWEEN.finditer(text):
        low, high = sorted((int(match[1]), int(match[2])))
        events.append((match.start(), low, high))
        spans.append(match.span())
    for pattern, is_after in ((_AFTER, True), (_BEFORE, False)):
        for match in pattern.finditer(text):
            if any(a <= match.start() < b for a, b in spans):
                continue
            cue, after = match[1].lower(), is_after
            if _YEAR_NEGATED.search(text[: match.start()]):  # "nothing before 2000" = 2000 or later
                cue, after = _NEGATED_CUES.get(cue, cue), not after
            first, decade = _year_of(match[2], match[3], match[4], match[5])
            last = first + 9 if decade else first
            if after:
                events.append((match.start(), last + 1 if cue in ("after", "post", "newer than") else first, None))
            else:
                events.append((match.start(), None, first - 1 if cue in ("before", "pre", "prior to", "older than")
                               else last))
            spans.append(match.span())
    for match in _DECADE.finditer(text):
        if any(a <= match.start() < b for a, b in spans):
            continue
        first, _ = _year_of(match[1], match[2], None, match[3])
        events.append((match.start(), first, first + 9))
    for _, low, high in sorted(events, key=lambda e: e[0]):
        if low is not None and high is not None:
            year_min, year_max = low, high
        elif low is not None:
            year_min = low
            year_max = year_max if year_max is None or year_max >= low else None
        elif high is not None:
            year_max = high
            year_min = year_min if year_min is None or year_min <= high else None
    return year_min, year_max


def year_range_text(state: DialogueState) -> str:
    """The wanted years in words: "1990-1999", "1996 or later", "1989 or earlier"."""
    if state.year_min and state.year_max:
        return f"{state.year_min}-{state.year_max}"
    return f"{state.year_min} or later" if state.year_min else f"{state.year_max} or earlier"


@dataclass(frozen=True, eq=False)
class CatalogueArrays:
    """What `candidates` filters, boosts and fills up with, as arrays over catalogue rows (row r is
    `catalogue.movies[r]`). Built once per catalogue, popularity and conversation prior (`ChatService` builds
    it when it starts), so a turn's ranking is array arithmetic rather than a Python loop over every movie."""

    catalogue: Catalogue
    popularity: np.ndarray
    """`[n_items]` float64 (zeros when none was given)."""
    by_popularity: np.ndarray
    """`[n_items]` rows, most popular first (by the conversation prior when there is one), ties in catalogue
    order: the cold-start order and what fills up a short personalised pool."""
    popularity_z: np.ndarray
    """`[n_items]` z(log(1 + popularity)), the popularity term of `fused_scores`."""
    prior_z: np.ndarray | None
    """`[n_items]` z(log p) of the conversation prior (`serving.conversation_prior.smoothed_log_prior`), the
    prior term of `fused_scores`; None without one."""
    co_mentions: SparseCounts | None
    """How often a movie was recommended (or came up) in a logged dialogue beside another (the co-mention term of
    `fused_scores`), or None."""
    word_cues: WordCues | None
    """Which movies logged dialogues recommended after which words (the cue term of `fused_scores`), or None."""
    years: np.ndarray
    """`[n_items]` float64 release years, NaN where unknown."""
    genre_names: tuple[str, ...]
    """`[n_genres]` the catalogue's genres, sorted; the columns of `genres`."""
    genres: np.ndarray
    """`[n_items, n_genres]` bool membership."""
    genre_words: np.ndarray
    """`[ceil(n_genres / 64), n_items]` uint64, `genres` as bit sets (popcounts count shared genres fast)."""
    _id_order: np.ndarray
    """`[n_items]` rows that sort `catalogue.ids` ascending (for vectorised id -> row)."""

    @classmethod
    def build(
        cls,
        catalogue: Catalogue,
        popularity: np.ndarray | Sequence[float] | None = None,
        log_prior: np.ndarray | None = None,
        co_mentions: SparseCounts | None = None,
        word_cues: WordCues | None = None,
    ) -> CatalogueArrays:
        """`popularity` `[n_items]` (e.g. rating counts); `log_prior` `[n_items]` finite log-probabilities of
        what conversations ask for, `co_mentions` and `word_cues` over the catalogue's rows
        (`serving.conversation_prior`), or None."""
        n = len(catalogue)
        popularity = np.zeros(n) if popularity is None else np.asarray(popularity, dtype=np.float64)
        if popularity.shape != (n,):
            raise ValueError(f"popularity must have one value per catalogue row ({n}), got {popularity.shape}")
        if log_prior is not None:
            log_prior = np.asarray(log_prior, dtype=np.float64)
            if log_prior.shape != (n,) or not np.isfinite(log_prior).all():
                raise ValueError(f"log_prior must be {n} finite values, one per catalogue row")
        names = tuple(catalogue.genres())
        column = {g: j for j, g in enumerate(names)}
        genres = np.zeros((n, len(names)), dtype=bool)
        for r, movie in enumerate(catalogue):
            genres[r, [column[g] for g in movie.genres]] = True
        return cls(
            catalogue=catalogue, popularity=popularity,
            by_popularity=np.argsort(-(popularity if log_prior is None else log_prior), kind="stable"),
            popularity_z=_standardise(np.log1p(np.maximum(popularity, 0.0))),
            prior_z=None if log_prior is None else _standardise(log_prior), co_mentions=co_mentions,
            word_cues=word_cues,
            years=np.array([np.nan if m.year is None else m.year for m in catalogue], dtype=np.float64),
            genre_names=names, genres=genres, genre_words=_bit_words(genres),
            _id_order=np.argsort(catalogue.ids, kind="stable"),
        )

    def rows(self, item_ids: np.ndarray | Sequence[int]) -> np.ndarray:
        """`[len(item_ids)]` int64 rows of catalogue ids; UnknownItemError for an id outside the catalogue."""
        ids = np.asarray(item_ids, dtype=np.int64)
        rows, found = self._lookup(ids)
        if not found.all():
            raise UnknownItemError(f"item {int(ids[~found][0])} is not in the catalogue")
        return rows

    def mask(self, item_ids: Iterable[int]) -> np.ndarray:
        """`[n_items]` bool: True at the rows of `item_ids` (ids outside the catalogue are ignored)."""
        ids = np.fromiter(item_ids, dtype=np.int64)
        rows, found = self._lookup(ids)
        mask = np.zeros(len(self.catalogue), dtype=bool)
        mask[rows[found]] = True
        return mask

    def genre_count(self, names: Iterable[str]) -> np.ndarray:
        """`[n_items]` int: how many of the genres `names` each movie has (names outside the catalogue: none)."""
        return self.genres[:, self._columns(names)].sum(axis=1)

    def has_any_genre(self, names: Iterable[str]) -> np.ndarray:
        """`[n_items]` bool: whether each movie has at least one of the genres `names`."""
        return self.genres[:, self._columns(names)].any(axis=1)

    def _columns(self, names: Iterable[str]) -> list[int]:
        wanted = set(names)
        return [j for j, g in enumerate(self.genre_names) if g in wanted]

    def _lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows, found) for `ids`; rows are meaningless where not found."""
        if not len(self._id_order):
            return np.zeros(len(ids), dtype=np.int64), np.zeros(len(ids), dtype=bool)
        sorted_ids = self.catalogue.ids[self._id_order]
        at = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
        return self._id_order[at], sorted_ids[at] == ids


def candidates(
    state: DialogueState,
    recommender: Recommender,
    catalogue: Catalogue,
    k: int,
    *,
    popularity: np.ndarray | None = None,
    config: RankingConfig | None = None,
    text_scores: np.ndarray | None = None,
    arrays: CatalogueArrays | None = None,
) -> list[int]:
    """Up to `k` catalogue ids to recommend next, best first.

    Personalised pool (the top `config.pool` by `fused_scores`, everything mentioned, seen or recommended
    left out) when there are liked items or `text_scores` (`[n_items]`, catalogue rows, e.g. ITC scores of
    the user's words); otherwise popularity (`[n_items]`, catalogue rows; catalogue order when None). Hard
    filters (`constraint_mask`, `config.deny_list`) come before soft boosts (`boosts`) on a base score of
    1 - rank / n_allowed. Popular items fill up when the personalised pool runs dry; with liked items the
    personalised ones keep precedence. Without liked items a genre-diversity penalty spreads the picks (cold
    start). Never returns an id outside the catalogue.

    `arrays` (built for `catalogue`, popularity inside) saves building them per call; give it or
    `popularity`, not both.
    """
    config = config or RankingConfig()
    if arrays is None:
        arrays = CatalogueArrays.build(catalogue, popularity)
    elif popularity is not None or arrays.catalogue is not catalogue:
        raise ValueError("candidates: pass either popularity or arrays built for this catalogue, not both")
    seen = (set(state.mentioned) | set(state.recommended) | set(state.liked) | set(state.disliked)
            | set(state.neutral) | set(state.seen) | set(config.deny_list))
    excluded = arrays.mask(seen)

    personalised = np.zeros(len(catalogue), dtype=bool)
    pool = arrays.by_popularity
    fused = fused_scores(state, recommender, arrays, config, text_scores, seen)
    if fused is not None:
        order = np.lexsort((np.arange(len(fused)), -fused))
        top = order[~excluded[order]][: config.pool]
        personalised[top] = True
        pool = np.concatenate([top, pool[~personalised[pool]]])

    allowed = pool[~excluded[pool] & constraint_mask(arrays, state)[pool]]
    if not allowed.size:
        return []
    scores = (1.0 - np.arange(allowed.size) / allowed.size) + boosts(arrays, state, config)[allowed]
    if state.liked:
        best = np.lexsort((-scores, ~personalised[allowed]))[:k]  # stable: ties keep the pool's order
        return [int(i) for i in catalogue.ids[allowed[best]]]
    return _diverse(allowed, scores, arrays, k, config.diversity)


def fused_scores(
    state: DialogueState,
    recommender: Recommender,
    arrays: CatalogueArrays,
    config: RankingConfig,
    text_scores: np.ndarray | None = None,
    exclude: set[int] | frozenset[int] = frozenset(),
) -> np.ndarray | None:
    """`[n_items]` (catalogue rows) fused retrieval scores, or None without liked items, text scores and cues:

        s = cf_weight * z(cf) n / (n + cf_support) + text_weight * z(text) + popularity_weight * z(log(1 + popularity))
            + prior_weight * z(log p_prior) + co_mention_weight * z(log(1 + co)) + cue_weight * z(cue)

    cf = the recommender's scores for the session vector of `fold_in_history`, n = popularity (the shrinkage only
    with `cf_support` > 0 and popularity known); z() standardises over the catalogue (the
    `exclude`d movies, which the recommender does not score, take the lowest z). A missing term is left out.
    Popularity is `arrays.popularity`; the prior term is there only when `arrays` has a conversation prior.
    co = sum over the folded-in items j with positive weight w_j of w_j * co_mentions[j, movie] (dialogues in
    which j came up and the movie was recommended, or both came up), from `arrays.co_mentions`, when it has
    them. cue = `arrays.word_cues.scores` of the words of the last `cue_turns` of `state.user_texts` (smoothing
    `cue_smoothing`), when it has them and one of the words is known.
    """
    catalogue = arrays.catalogue
    total = np.zeros(len(catalogue))
    used = False
    items, weights = fold_in_history(state, config)
    if any(w > 0 for w in weights):
        n = len(catalogue) - sum(1 for i in exclude | set(items) if i in catalogue)
        if n > 0:
            ids, values = recommender.recommend(items, k=n, exclude=sorted(exclude), weights=weights)
            cf = np.full(len(catalogue), np.nan)
            cf[arrays.rows(ids)] = values
            cf_z = _standardise(cf)
            if config.cf_support and arrays.popularity.any():
                cf_z *= arrays.popularity / (arrays.popularity + config.cf_support)
            total += config.cf_weight * cf_z
            used = True
        if config.co_mention_weight and arrays.co_mentions is not None:
            positive = [(i, w) for i, w in zip(items, weights) if w > 0 and i in catalogue]
            together = arrays.co_mentions.weighted_rows(arrays.rows([i for i, _ in positive]),
                                                        [w for _, w in positive])
            total += config.co_mention_weight * _standardise(np.log1p(together))
            used = True
    if text_scores is not None:
        if np.shape(text_scores) != (len(catalogue),):
            raise ValueError(f"text_scores must have one value per catalogue row ({len(catalogue)}), "
                             f"got {np.shape(text_scores)}")
        total += config.text_weight * _standardise(np.asarray(text_scores, dtype=np.float64))
        used = True
    if config.cue_weight and arrays.word_cues is not None:
        cues = arrays.word_cues.scores(cue_words(" ".join(state.user_texts[-config.cue_turns :])),
                                       config.cue_smoothing)
        if cues is not None:
            total += config.cue_weight * _standardise(cues)
            used = True
    if not used:
        return None
    if config.popularity_weight:
        total += config.popularity_weight * arrays.popularity_z
    if config.prior_weight and arrays.prior_z is not None:
        total += config.prior_weight * arrays.prior_z
    return total


def fold_in_history(state: DialogueState, config: RankingConfig) -> tuple[list[int], list[float]]:
    """(items, weights) the session vector folds in: liked +1, neutral `neutral_weight`, disliked
    `disliked_weight`, and, when `recommended_weight` is set, earlier recommendations nobody gave a verdict on."""
    items = [*state.liked, *state.neutral, *state.disliked]
    weights = ([1.0] * len(state.liked) + [config.neutral_weight] * len(state.neutral)
               + [config.disliked_weight] * len(state.disliked))
    if config.recommended_weight:
        judged = set(items) | set(state.seen)
        extra = [i for i in state.recommended if i not in judged]
        items += extra
        weights += [config.recommended_weight] * len(extra)
    return items, weights


def _standardise(values: np.ndarray) -> np.ndarray:
    """(x - mean) / std over the finite entries; NaN entries get the lowest value; constant input gives 0."""
    finite = np.isfinite(values)
    out = np.zeros_like(values, dtype=np.float64)
    if finite.sum() > 1 and values[finite].std() > 0:
        out[finite] = (values[finite] - values[finite].mean()) / values[finite].std()
    if not finite.all():
        out[~finite] = out[finite].min() if finite.any() else 0.0
    return out


def has_constraints(state: DialogueState) -> bool:
    """Whether the state holds a hard filter (an excluded genre, an "only" genre set or a year bound)."""
    return (bool(state.exclude_genres) or bool(state.only_genres) or state.year_min is not None
            or state.year_max is not None)


def passes_constraints(movie: Movie, state: DialogueState) -> bool:
    """Hard filters: no excluded genre, all the genres of one "only" set (when there are any), inside the year
    range (an unknown year fails a stated range)."""
    if set(movie.genres) & set(state.exclude_genres):
        return False
    if state.only_genres and not any(set(group) <= set(movie.genres) for group in state.only_genres):
        return False
    if state.year_min is not None and (movie.year is None or movie.year < state.year_min):
        return False
    if state.year_max is not None and (movie.year is None or movie.year > state.year_max):
        return False
    return True


def constraint_mask(arrays: CatalogueArrays, state: DialogueState) -> np.ndarray:
    """`[n_items]` bool: `passes_constraints` for every catalogue row at once."""
    ok = ~arrays.has_any_genre(state.exclude_genres)
    if state.only_genres:
        ok &= np.logical_or.reduce([arrays.genre_count(group) == len(set(group)) for group in state.only_genres])
    if state.year_min is not None:
        ok &= arrays.years >= state.year_min  # NaN (unknown year) compares False: it fails a stated range
    if state.year_max is not None:
        ok &= arrays.years <= state.year_max
    return ok


def boosts(arrays: CatalogueArrays, state: DialogueState, config: RankingConfig) -> np.ndarray:
    """`[n_items]` soft boosts added to the base score:

        b = include_boost * |genres & wanted| / |wanted| + mood_boost * ([has a preferred genre] - [has a pushed one])

    (a term is 0 without requested genres or without a mood).
    """
    boost = np.zeros(len(arrays.catalogue))
    wanted = set(state.include_genres)
    if wanted:
        boost = config.include_boost * arrays.genre_count(wanted) / len(wanted)
    if state.mood is not None:
        prefer, push = MOOD_GENRES[state.mood]
        boost = boost + config.mood_boost * (arrays.has_any_genre(prefer).astype(np.int64)
                                             - arrays.has_any_genre(push))
    return boost


def _diverse(rows: np.ndarray, scores: np.ndarray, arrays: CatalogueArrays, k: int, penalty: float) -> list[int]:
    """Greedy over catalogue `rows` with `scores` `[len(rows)]`: the best score minus `penalty` x the largest
    genre Jaccard overlap with an earlier pick, |a & b| / |a | b| (0 when both have no genre); among equals
    the better-scored, then the earlier in `rows`. Returns catalogue ids.

    Vectorised over rows: after each pick every row's largest overlap is updated with that pick, the
    intersections counted as popcounts of the genre bit sets.
    """
    order = np.argsort(-scores, kind="stable")
    rows, base = rows[order], scores[order]
    words = arrays.genre_words[:, rows]
    counts = _shared_genres(words, None)
    overlap = np.zeros(len(rows))
    taken = np.zeros(len(rows), dtype=bool)
    chosen: list[int] = []
    for _ in range(min(k, len(rows))):
        adjusted = np.where(taken, -np.inf, base - penalty * overlap)
        best = int(np.argmax(adjusted))  # first of equals: the better-ranked
        taken[best] = True
        chosen.append(best)
        shared = _shared_genres(words, best)
        union = counts + counts[best] - shared
        overlap = np.maximum(overlap, np.divide(shared, union, out=np.zeros(len(rows)), where=union > 0))
    return [int(i) for i in arrays.catalogue.ids[rows[chosen]]]


def _bit_words(member: np.ndarray) -> np.ndarray:
    """`[n, g]` bool -> `[ceil(g / 64), n]` uint64: bit j of word w is column 64 w + j."""
    n, g = member.shape
    padded = np.zeros((n, max(1, -(-g // 64)) * 64), dtype=np.uint64)
    padded[:, :g] = member
    bits = padded.reshape(n, -1, 64) << np.arange(64, dtype=np.uint64)
    return np.bitwise_or.reduce(bits, axis=2).T.copy()


def _shared_genres(words: np.ndarray, other: int | None) -> np.ndarray:
    """`[n]` int64: how many genres each column of `words` shares with column `other` (None: has at all)."""
    shared = np.zeros(words.shape[1], dtype=np.int64)
    for word in words:
        shared += np.bitwise_count(word if other is None else word & word[other])
    return shared


def _move(value: object, *, to: list, away: list) -> None:
    """Put `value` in `to` (once) and take it out of `away`: a later statement wins."""
    if value in away:
        away.remove(value)
    if value not in to:
        to.append(value)


def _mask(text: str, mentions: Iterable[Mention]) -> str:
    """`text` with each mention replaced by commas (a clause break of the same length)."""
    chars = list(text)
    for m in mentions:
        chars[m.start : m.end] = "," * (m.end - m.start)
    return "".join(chars)


def _words(text: str, mentions: Sequence[Mention]) -> tuple[list[str], list[int], list[int | None]]:
    """Normalised words, the clause number of each, and which mention (index) each belongs to."""
    words: list[str] = []
    clauses: list[int] = []
    owner: list[int | None] = []
    clause, previous_end = 0, 0
    for token in tokenise(text):
        word = token.norm
        if word == "but" and words and words[-1] in ("anything", "everything"):
            word = "except"  # "anything but horror" rules horror out rather than starting a new clause
        elif word == "but" and words and words[-1] == "nothing" and not _CLAUSE_PUNCT.search(
                text[previous_end : token.start]):
            words[-1] = word = "only"  # "nothing but comedies" asks for comedies only
        elif _CLAUSE_PUNCT.search(text[previous_end : token.start]) or word in CLAUSE_WORDS:
            clause += 1
        previous_end = token.end
        words.append(word)
        clauses.append(clause)
        owner.append(next((i for i, m in enumerate(mentions) if m.start <= token.start < m.end), None))
    # words inside one mention never split its clause ("Monsters, Inc.")
    for index in set(o for o in owner if o is not None):
        positions = [i for i, o in enumerate(owner) if o == index]
        for i in positions:
            clauses[i] = clauses[positions[0]]
    return words, clauses, owner


def _positions(owner: list[int | None], n_mentions: int) -> list[list[int]]:
    """For each mention, the word positions it covers (empty when it covers no word)."""
    positions: list[list[int]] = [[] for _ in range(n_mentions)]
    for i, o in enumerate(owner):
        if o is not None:
            positions[o].append(i)
    return positions


def _sentiment(words: list[str], clauses: list[int], positions: list[int]) -> bool | None:
    """The verdict of the first sentiment word among `positions` (in that order), negation applied."""
    for i in positions:
        if words[i] in NEGATIVE:
            return words[i] not in NEGATION_PROOF and _negated(words, clauses, i, NEGATION_WINDOW_SENTIMENT)
        if words[i] in POSITIVE:
            return not _negated(words, clauses, i, NEGATION_WINDOW_SENTIMENT)
    return None


def _negated(words: list[str], clauses: list[int], index: int, window: int) -> bool:
    """A negator within `window` words before `index`, in the same clause."""
    return any(
        words[j] in NEGATORS and clauses[j] == clauses[index] for j in range(max(0, index - window), index)
    )


def _phrases(words: list[str], lexicon: dict[tuple[str, ...], object]) -> list[tuple[int, int, object]]:
    """Non-overlapping lexicon phrases in `words`, longest first at each position: (start, end, value)."""
    longest = max(len(k) for k in lexicon)
    found, i = [], 0
    while i < len(words):
        for n in range(min(longest, len(words) - i), 0, -1):
            value = lexicon.get(tuple(words[i : i + n]))
            if value is not None:
                found.append((i, i + n, value))
                i += n
                break
        else:
            i += 1
    return found


def _adjacent_sets(
    phrases: list[tuple[int, int, tuple[str, ...]]],
) -> list[tuple[int, int, tuple[str, ...], list[tuple[int, tuple[str, ...]]]]]:
    """Runs of genre phrases with no word between them: (start, end, their genres, [(start, genres)] each)."""
    sets: list[tuple[int, int, tuple[str, ...], list[tuple[int, tuple[str, ...]]]]] = []
    for start, end, genres in phrases:
        if sets and sets[-1][1] == start:
            first, _, joined, parts = sets[-1]
            sets[-1] = (first, end, tuple(dict.fromkeys(joined + genres)), [*parts, (start, genres)])
        else:
            sets.append((start, end, genres, [(start, genres)]))
    return sets


def _only_cue(words: list[str], clauses: list[int], start: int) -> bool | None:
    """Whether an "only" cue leads up to the genre set at `start`: None when none does, else whether the cue
    is negated ("not just comedies")."""
    j = start - 1
    gap: list[str] = []
    while j >= 0 and clauses[j] == clauses[start] and len(gap) <= 4:
        word = words[j]
        if word in ONLY_CUES and not (j > 0 and words[j - 1] in NOT_A_CUE_AFTER):
            if not set(gap) <= (ONLY_GAP if word == "just" else ONLY_VERB_GAP):
                return None
            return any(words[i] in NEGATORS and clauses[i] == clauses[j] for i in range(max(0, j - 2), j))
        if not re.fullmatch(r"\d+s?", word):  # years and decades may stand between: "only 90s comedies"
            if word not in ONLY_VERB_GAP:
                return None
            gap.append(word)
        j -= 1
    return None


def _only_after(words: list[str], clauses: list[int], start: int, end: int) -> bool:
    """Whether an "only" cue follows the genre set `words[start:end]` in its clause ("comedies only", "comedy
    movies only"); a negated set is never "only" ("no sci-fi, only from the 80s", "no horror only 90s")."""
    if _negated(words, clauses, start, NEGATION_WINDOW_GENRE):
        return False
    while end < len(words) and words[end] in ONLY_TAIL:
        end += 1
    return end < len(words) and clauses[end] == clauses[start] and any(
        tuple(words[end : end + len(cue)]) == cue for cue in ONLY_AFTER)


def _relaxed(words: list[str], clauses: list[int], start: int) -> bool:
    """Whether a negated "have to be" ("doesn't have to be a", "not necessarily", "needn't be") leads up to
    the genre set at `start`."""
    j = start
    while j > 0 and words[j - 1] in RELAX_GAP and clauses[j - 1] == clauses[start]:
        j -= 1
    for phrase in RELAX_PHRASES:
        begin = j - len(phrase)
        if begin >= 0 and tuple(words[begin:j]) == phrase and clauses[begin] == clauses[start]:
            return phrase[0] == "neednt" or _negated(words, clauses, begin, NEGATION_WINDOW_SENTIMENT)
    return False


def _resolve_genre(name: str, known: Sequence[str]) -> str | None:
    """The catalogue's spelling of a genre ("Children" may be "Children's"), or None when absent."""
    if name in known:
        return name
    key = normalise(re.sub(r"[^\w]", "", name))
    for genre in known:
        other = normalise(re.sub(r"[^\w]", "", genre))
        if other == key or other.startswith(key) or key.startswith(other):
            return genre
    return None


def _year_of(two_digit: str | None, decade4: str | None, year: str | None, word: str | None) -> tuple[int, bool]:
    """(first year, is a decade) from one of the alternatives of `_YEAR_OR_DECADE`."""
    if word:
        return _DECADE_WORDS[word.lower()], True
    if two_digit:
        value = int(two_digit)
        return (1900 + value if value >= 30 else 2000 + value), True
    if decade4:
        return int(decade4), True
    return int(year), False
