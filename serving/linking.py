"""Find the catalogue movies a person mentions in free text.

Every catalogue title gives a few *aliases* (normalised word sequences): the title as written, with
MovieLens's moved article put back in front ("Lion King, The" -> "the lion king") and without it ("lion
king"), each alternate title in parentheses ("Se7en (a.k.a. Seven)" -> "se7en", "seven"), and the part before
a colon ("Terminator 2: Judgment Day" -> "terminator 2") and the part before a last " - " ("Avengers: Infinity War -
Part I" -> "avengers infinity war"). Normalising lower-cases, strips accents and
apostrophes and keeps letters and digits, so "Amélie" == "amelie" and "Schindler's" == "schindlers".

Matching runs over word n-grams of the message: an exact alias look-up first, then rapidfuzz `ratio` against
aliases with the same number of words (and the same first letter) for typos ("toy stroy"). Overlapping
matches are resolved by preferring exact matches, then longer ones, then higher similarity; when several
movies share the alias, a year written right after it ("Heat (1995)", "heat 1995") decides, then popularity;
the others are kept as the mention's `alternatives` so the reply can ask.

**False positives on everyday words.** An alias whose core (after a leading article) is a single alphabetic
word, such as "Up", "Heat", "Alien" or "(The) Shining", or a word followed by "movie" or "film" ("Scary
Movie", "A Goofy Movie"), is *weak*: it is accepted only with a clear signal:
  1. it is quoted or emphasised: "Up", 'Up', *Up*;
  2. it is capitalised and not the first word of a sentence: "I loved Heat";
  3. a year follows it: "heat (1995)";
  4. the message is nothing but the title plus filler: "up", "what about heat?", "I loved memento!";
  5. a preference cue comes right before it ("loved", "watched", "the movie", ...) and the clause ends or
     goes on with a connective right after it: "i loved memento because ...", but not "i watched seven movies";
  6. it is listed next to an accepted mention: "Toy Story, heat and memento";
  7. it starts a sentence or clause and a verdict follows: "Clueless wasn't good", "interstelar was amazing".
A title made only of everyday chat words (`EVERYDAY`: pronouns such as "It", "Her", fillers and cues such as
"Love", "More", "Anything Else") needs one of rules 1-3: "loved it", "I love Heat", "more" link no such title.
Rule 2 does not count inside a run of capitalised words ("Zorgon Chronicles Part Seven" is another name).
Rule 4's filler includes plain verdicts ("was great", "is boring"), so "Memento was great" links.
A fuzzy match never ends on "one"/"ones" unless the title does: "the last one" points at an earlier pick,
it is no typo of "The Last Song".
Weak aliases match fuzzily only when they are long (`MIN_WEAK_FUZZY_CHARS`, "interstelar") and still need a
signal. A bare number ("2001", "1941") is weak too, and a year written right before a title is its year
("the 2001 Planet of the Apes"), as is one right after it ("Inception (2010)"), not a title. So "set up a movie night" links nothing.

`unrecognised` finds what looks like a title but links to nothing (a quoted span, or capitalised words after
"loved", "seen", ...), so the reply can say it does not know that movie.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from rapidfuzz import fuzz, process

from retrieval.catalogue import Catalogue

ARTICLES = frozenset("the a an le la les l il el los las der die das un une".split())
_MOVED_ARTICLE = re.compile(
    r"^(?P<body>.+), (?P<article>The|A|An|Le|La|Les|L'|Il|El|Los|Las|Der|Die|Das|Un|Une)$", re.I
)
_TRAILING_PARENS = re.compile(r"\s*\(([^()]*)\)\s*$")
_AKA = re.compile(r"^(a\.k\.a\.|aka)\s+", re.I)
_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff\u00ad"  # zero-width space/joiners, word joiner, BOM, soft hyphen
_WORD = re.compile(rf"[^\W_]+(?:(?:['’]|[{_INVISIBLE}]+)[^\W_]+)*|&")
_YEAR = re.compile(r"^\s*(?:\(\s*((?:18|19|20)\d\d)\s*\)|((?:18|19|20)\d\d)\b)")
_SENTENCE_END = re.compile(r"[.!?;:\n]\s*$")
_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’", "*": "*", "_": "_", "«": "»"}

FILLER = frozenset(
    "i im ive we you me my a the and or also too what about how really so very much loved love liked like "
    "enjoyed enjoy adore adored watched saw seen hated hate disliked dislike did didnt do dont not fan of was "
    "is it movie film please thanks maybe great good amazing awesome fantastic brilliant favorite favourite best "
    "terrible awful boring bad worst overrated".split()
)
CUES = frozenset(
    "loved love liked like enjoyed enjoy adore adored watched watch saw seen rewatched hated hate disliked "
    "dislike movie film called titled recommend".split()
)
FOLLOWERS = frozenset(
    "and or but because since so too as a very really lot though also more most better the it was is when with "
    "which from in on at last yesterday again twice".split()
)
CONNECTORS = frozenset({"and", "or", "plus", "also", "as", "well", "&", "then"})
PRONOUNS = frozenset("it her us them me you him she he we they this that".split())
EVERYDAY = PRONOUNS | FILLER | CUES | frozenset(
    "more else anything something another other again next one new old thanks thank yes no ok okay sure hello "
    "hi hey".split()
)
"""Words chat messages are made of: a title made only of them ("Love", "More", "Anything Else") needs rule 1-3."""
PICK_REFERENCES = frozenset({"one", "ones"})
"""A fuzzy match may not end on these unless the title does: "the last one", "the other ones" point at picks."""
VERDICT_VERBS = frozenset("was is were wasnt isnt werent".split())
VERDICT_ADVERBS = frozenset("not really so very pretty quite too just truly absolutely kind of a an".split())
VERDICTS = frozenset(
    "great good amazing awesome fantastic brilliant excellent fun funny lovely perfect beautiful incredible "
    "terrible awful boring bad overrated meh disappointing annoying dull weird ok okay fine".split()
)
TITLE_CUES = frozenset("loved love liked like enjoyed adore adored watched saw seen about called titled".split())
GENERIC_NOUNS = frozenset("movie movies film films".split())
SMALL_WORDS = frozenset("of the a an and in on to for with at from by vs".split())
_YEAR_WORD = re.compile(r"^(?:18|19|20)\d\d$")
_YEAR_BEFORE = re.compile(r"\b((?:18|19|20)\d\d)(?:'s)?\s+$")
_QUOTED_SPAN = re.compile(r"\"([^\"\n]{2,80})\"|“([^”\n]{2,80})”|(?<!\w)'([^'\n]{2,80})'(?!\w)")

MIN_FUZZY_CHARS = 8
"""Aliases shorter than this (in characters) only match exactly: short strings are too easy to hit by chance."""
MIN_WEAK_FUZZY_CHARS = 10
"""Weak (one-word) aliases need this many characters to match fuzzily ("interstellar", not "memento")."""


class Mention(BaseModel):
    """A movie mentioned in a message: catalogue id, the text as written, its span `[start, end)`, match score."""

    model_config = ConfigDict(frozen=True)

    item_id: int
    surface: str
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    score: float = Field(ge=0.0, le=1.0, description="1 for an exact alias, else rapidfuzz ratio / 100.")
    alternatives: tuple[int, ...] = Field(
        (), description="Other movies of the same name, when no year decided between them (most popular first)."
    )


@dataclass(frozen=True)
class _Token:
    norm: str
    start: int
    end: int
    raw: str


@dataclass(frozen=True)
class _Alias:
    row: int
    rank: int  # 0 = a full title, 1 = the part before a colon


@dataclass
class _Candidate:
    first: int  # token span [first, last)
    last: int
    key: tuple[str, ...]
    score: float

    @property
    def length(self) -> int:
        return self.last - self.first


def normalise(word: str) -> str:
    """Lower-case, strip accents, apostrophes and invisible characters: "Amélie's" -> "amelies"; "&" -> "and"."""
    if word == "&":
        return "and"
    decomposed = unicodedata.normalize("NFKD", word.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c) and c not in "'’" + _INVISIBLE)


def tokenise(text: str) -> list[_Token]:
    """Words of `text` with their character spans."""
    return [_Token(normalise(m.group()), m.start(), m.end(), m.group()) for m in _WORD.finditer(text)]


def title_names(title: str) -> list[str]:
    """The names a MovieLens title goes by, articles moved back in front.

    "Amelie (Fabuleux destin d'Amélie Poulain, Le)" -> ["Amelie", "Le Fabuleux destin d'Amélie Poulain"].
    """
    alternates: list[str] = []
    while (match := _TRAILING_PARENS.search(title)) and match.start() > 0:
        alternate = _AKA.sub("", match.group(1).strip())
        if not alternate.isdigit():  # "(1995)" left in a title is a year, not a name
            alternates.insert(0, alternate)
        title = title[: match.start()]
    names = []
    for name in [title, *alternates]:
        moved = _MOVED_ARTICLE.match(name.strip())
        if moved:
            article = moved["article"]
            name = f"{article}{'' if article.endswith(chr(39)) else ' '}{moved['body']}"
        if name.strip():
            names.append(name.strip())
    return names


class TitleLinker:
    """Links movie mentions in text to catalogue ids (see the module docstring for the rules).

    `popularity`: `[n_items]`, aligned with catalogue rows (e.g. rating counts); breaks ties between movies
    that share a name. Without it, ties go to the earlier catalogue row.
    """

    def __init__(self, catalogue: Catalogue, popularity: Sequence[float] | np.ndarray | None = None,
                 fuzzy_cutoff: float = 85.0):
        self.catalogue = catalogue
        if popularity is None:
            popularity = np.zeros(len(catalogue))
        self.popularity = np.asarray(popularity, dtype=np.float64)
        if self.popularity.shape != (len(catalogue),):
            raise ValueError(
                f"popularity must have one value per catalogue row ({len(catalogue)}), got {self.popularity.shape}"
            )
        self.fuzzy_cutoff = fuzzy_cutoff
        self._aliases: dict[tuple[str, ...], list[_Alias]] = defaultdict(list)
        for row, movie in enumerate(catalogue):
            for key, rank in _alias_keys(movie.title):
                self._aliases[key].append(_Alias(row, rank))
        self._max_words = max((len(k) for k in self._aliases), default=0)
        self._displayed: dict[str, int] = {}  # display title -> id, the most popular first
        for row in np.argsort(-self.popularity, kind="stable"):
            self._displayed.setdefault(catalogue.movies[row].display_title, int(catalogue.ids[row]))
        # fuzzy choices bucketed by (word count, first letter): a typo rarely hits the first letter
        self._fuzzy: dict[tuple[int, str], list[str]] = defaultdict(list)
        for key in self._aliases:
            joined = " ".join(key)
            if len(joined) >= (MIN_WEAK_FUZZY_CHARS if _is_weak(key) else MIN_FUZZY_CHARS):
                self._fuzzy[(len(key), joined[0])].append(joined)

    def find(self, text: str) -> list[Mention]:
        """Mentions in `text`, in order of appearance, non-overlapping."""
        tokens = tokenise(text)
        candidates = self._candidates(tokens)
        candidates.sort(key=lambda c: (c.score == 1.0, c.length, c.score), reverse=True)
        chosen: list[_Candidate] = []
        taken = np.zeros(len(tokens), dtype=bool)
        weak_pending: list[_Candidate] = []
        for cand in candidates:
            if taken[cand.first : cand.last].any():
                continue
            if _is_weak(cand.key) and not _has_signal(text, tokens, cand):
                weak_pending.append(cand)
                continue
            chosen.append(cand)
            taken[cand.first : cand.last] = True
        changed = True
        while changed:  # rule 6: weak titles listed next to accepted ones
            changed = False
            for cand in list(weak_pending):
                if (not taken[cand.first : cand.last].any() and _listed_next_to(tokens, cand, chosen)
                        and not _year_of_neighbour(text, tokens, cand, chosen) and not _everyday(cand.key)):
                    chosen.append(cand)
                    taken[cand.first : cand.last] = True
                    weak_pending.remove(cand)
                    changed = True
        chosen.sort(key=lambda c: c.first)
        return [self._mention(text, tokens, cand) for cand in chosen]

    def displayed(self, display_title: str) -> int | None:
        """The id of the movie shown as exactly `display_title` ("Heat (1995)"; the most popular when several
        are), or None."""
        return self._displayed.get(display_title.strip())

    def _candidates(self, tokens: list[_Token]) -> list[_Candidate]:
        norms = [t.norm for t in tokens]
        found: list[_Candidate] = []
        exact_spans: set[tuple[int, int]] = set()
        for first in range(len(norms)):
            for n in range(1, min(self._max_words, len(norms) - first) + 1):
                key = tuple(norms[first : first + n])
                if key in self._aliases:
                    found.append(_Candidate(first, first + n, key, 1.0))
                    exact_spans.add((first, first + n))
        for n in range(1, min(self._max_words, len(norms)) + 1):
            spans = [(i, i + n) for i in range(len(norms) - n + 1) if (i, i + n) not in exact_spans]
            queries = [" ".join(norms[a:b]) for a, b in spans]
            by_letter: dict[str, list[int]] = defaultdict(list)
            for q, query in enumerate(queries):
                if len(query) >= MIN_FUZZY_CHARS - 1 and (n, query[0]) in self._fuzzy:
                    by_letter[query[0]].append(q)
            for letter, rows in by_letter.items():
                choices = self._fuzzy[(n, letter)]
                scores = process.cdist([queries[q] for q in rows], choices, scorer=fuzz.ratio,
                                       score_cutoff=self.fuzzy_cutoff, dtype=np.float32)
                for q, row_scores in zip(rows, scores):
                    best = float(row_scores.max())
                    if best >= self.fuzzy_cutoff:
                        for j in np.flatnonzero(row_scores == best):
                            a, b = spans[q]
                            key = tuple(choices[j].split(" "))
                            if norms[b - 1] in PICK_REFERENCES and norms[b - 1] != key[-1]:
                                continue  # "the last one" refers to a pick; it is no typo of The Last Song
                            found.append(_Candidate(a, b, key, best / 100.0))
        return found

    def unrecognised(self, text: str, mentions: Sequence[Mention] | None = None) -> list[str]:
        """Spans that look like movie titles but link to nothing: quoted text, or a run of capitalised words
        right after a cue ("I loved Zorgon Chronicles"). `mentions`: `find(text)` when already computed."""
        mentions = self.find(text) if mentions is None else mentions

        def free(start: int, end: int) -> bool:
            return not any(m.start < end and start < m.end for m in mentions)

        found: list[tuple[int, str]] = []
        for match in _QUOTED_SPAN.finditer(text):
            group = next(g for g in (1, 2, 3) if match[g] is not None)
            if free(match.start(group), match.end(group)) and len(match[group].split()) <= 8:
                found.append((match.start(group), match[group].strip()))
        tokens = tokenise(text)
        i = 0
        while i < len(tokens):
            run_end = i
            if i > 0 and tokens[i - 1].norm in TITLE_CUES and tokens[i].raw[:1].isupper() and tokens[i].raw != "I":
                while (run_end + 1 < len(tokens) and _continues_title(text, tokens, run_end + 1)
                       and free(tokens[run_end + 1].start, tokens[run_end + 1].end)):
                    run_end += 1
                while run_end > i and tokens[run_end].norm in SMALL_WORDS:
                    run_end -= 1
                start, end = tokens[i].start, tokens[run_end].end
                if free(start, end) and not any(a <= start < a + len(n) for a, n in found):
                    found.append((start, text[start:end]))
            i = run_end + 1
        return [name for _, name in sorted(found)]

    def _mention(self, text: str, tokens: list[_Token], cand: _Candidate) -> Mention:
        start, end = tokens[cand.first].start, tokens[cand.last - 1].end
        year_match = _YEAR.match(text[end:])
        year = int(year_match.group(1) or year_match.group(2)) if year_match else None
        year_before = _YEAR_BEFORE.search(text[:start])
        rows = [a.row for a in self._aliases[cand.key]]
        if year is None and year_before and int(year_before[1]) in {self.catalogue.movies[r].year for r in rows}:
            year, start = int(year_before[1]), year_before.start()
        best = max(
            self._aliases[cand.key],
            key=lambda a: (self.catalogue.movies[a.row].year == year, -a.rank, self.popularity[a.row], -a.row),
        )
        movie = self.catalogue.movies[best.row]
        if year_match and movie.year == year:
            end += year_match.end()
        others: tuple[int, ...] = ()
        if movie.year != year or year is None:
            rows = sorted({a.row for a in self._aliases[cand.key] if a.rank == best.rank} - {best.row},
                          key=lambda r: -self.popularity[r])
            others = tuple(self.catalogue.movies[r].item_id for r in rows)
        return Mention(item_id=movie.item_id, surface=text[start:end], start=start, end=end, score=cand.score,
                       alternatives=others)


def _alias_keys(title: str) -> list[tuple[tuple[str, ...], int]]:
    """(normalised words, rank) for every alias of a MovieLens title."""
    keys: dict[tuple[str, ...], int] = {}
    for name in title_names(title):
        variants = [(name, 0)]
        head, colon, _ = name.partition(":")
        if colon and head.strip():
            variants.append((head, 1))
        before_part, dash, _ = name.rpartition(" - ")
        if dash and before_part.strip():  # "Avengers: Infinity War - Part I" is "Avengers: Infinity War" in chat
            variants.append((before_part, 1))
        for variant, rank in variants:
            words = tuple(t.norm for t in tokenise(variant))
            if not words:
                continue
            for key in (words, words[1:] if words[0] in ARTICLES and len(words) > 1 else None):
                if key and keys.get(key, 2) > rank:
                    keys[key] = rank
    return list(keys.items())


def _is_weak(key: tuple[str, ...]) -> bool:
    """A single alphabetic word or number, maybe after an article, only everyday words, or a word then "movie"
    ("Scary Movie", "A Goofy Movie"): what chat text contains by accident ("a scary movie")."""
    core = key[1:] if len(key) > 1 and key[0] in ARTICLES else key
    return ((len(core) == 1 and (core[0].isalpha() or core[0].isdigit())) or _everyday(key)
            or (len(core) == 2 and core[1] in GENERIC_NOUNS))


def _everyday(key: tuple[str, ...]) -> bool:
    """Every word of the alias (articles aside) is an `EVERYDAY` word."""
    core = [w for w in key if w not in ARTICLES] or list(key)
    return all(w in EVERYDAY for w in core)


def _continues_title(text: str, tokens: list[_Token], i: int) -> bool:
    """Whether token i carries on a capitalised name: same clause, capitalised, a digit or a small word."""
    if re.search(r"[^\w\s'’&-]", text[tokens[i - 1].end : tokens[i].start]):
        return False
    raw = tokens[i].raw
    return raw[:1].isupper() or raw.isdigit() or (tokens[i].norm in SMALL_WORDS and i + 1 < len(tokens)
                                                   and tokens[i + 1].raw[:1].isupper())


def _in_capitalised_run(text: str, tokens: list[_Token], cand: _Candidate) -> bool:
    """A capitalised word (not "I") right next to the span, with only spaces between: part of another name."""
    neighbours = []
    if cand.first > 0:
        neighbours.append((tokens[cand.first - 1], text[tokens[cand.first - 1].end : tokens[cand.first].start]))
    if cand.last < len(tokens):
        neighbours.append((tokens[cand.last], text[tokens[cand.last - 1].end : tokens[cand.last].start]))
    return any(t.raw[:1].isupper() and t.raw != "I" and not gap.strip() for t, gap in neighbours)


def _verdict_follows(tokens: list[_Token], cand: _Candidate) -> bool:
    """Rule 7's second half: "was", "isn't", ... then maybe adverbs, then a verdict word."""
    i = cand.last
    if i >= len(tokens) or tokens[i].norm not in VERDICT_VERBS:
        return False
    i += 1
    while i < len(tokens) and tokens[i].norm in VERDICT_ADVERBS:
        i += 1
    return i < len(tokens) and tokens[i].norm in VERDICTS


def _has_signal(text: str, tokens: list[_Token], cand: _Candidate) -> bool:
    """Rules 1-5 of the module docstring."""
    span = tokens[cand.first : cand.last]
    start, end = span[0].start, span[-1].end
    before, after = text[:start], text[end:]
    opener = before[-1:] if before else ""
    if opener in _QUOTES and after[:1] == _QUOTES[opener]:
        return True
    core = [t for t in span if t.norm not in ARTICLES] or span
    sentence_start = not before.strip() or bool(_SENTENCE_END.search(before))
    if all(t.raw[0].isupper() for t in core) and not sentence_start and not _in_capitalised_run(text, tokens, cand):
        return True
    clause_start = sentence_start or bool(re.search(r"[,;]\s*$", before)) or (
        cand.first > 0 and tokens[cand.first - 1].norm in ("but", "and", "though"))
    if clause_start and _verdict_follows(tokens, cand):
        return True
    if _YEAR.match(after):
        return True
    if _everyday(cand.key):
        return False
    others = tokens[: cand.first] + tokens[cand.last :]
    if all(t.norm in FILLER for t in others):
        return True
    prev = cand.first - 1
    if prev >= 0 and tokens[prev].norm in ARTICLES and cand.key[0] not in ARTICLES:
        prev -= 1
    if prev >= 0 and tokens[prev].norm in CUES:
        nxt = cand.last
        clause_ends = nxt >= len(tokens) or bool(re.match(r"\s*[^\w\s'’]", after))
        return clause_ends or tokens[nxt].norm in FOLLOWERS
    return False


def _year_of_neighbour(text: str, tokens: list[_Token], cand: _Candidate, chosen: list[_Candidate]) -> bool:
    """A year-like number right before an accepted mention ("the 2001 Planet of ...") or right after one, maybe
    in parentheses ("Inception (2010)", "inception 2010"): that mention's year, not a title."""
    if not _YEAR_WORD.match(" ".join(cand.key)):
        return False
    start = tokens[cand.first].start
    return any(other.first == cand.last
               or (other.last == cand.first and re.fullmatch(r"\s*\(?\s*", text[tokens[other.last - 1].end : start]))
               for other in chosen)


def _listed_next_to(tokens: list[_Token], cand: _Candidate, chosen: list[_Candidate]) -> bool:
    """Rule 6: only connectives (and commas) separate the candidate from an accepted mention."""
    for other in chosen:
        gap = range(other.last, cand.first) if other.last <= cand.first else range(cand.last, other.first)
        if all(tokens[i].norm in CONNECTORS or _YEAR.match(tokens[i].raw) for i in gap):
            return True
    return False
