"""Link the entity ids of CRSLab-style conversation files (DBpedia resources) to catalogue movies.

Evidence per entity, gathered over a whole file:
  * its DBpedia URI: `<http://dbpedia.org/resource/Water_(1985_film)>` -> title "Water", year 1985;
    a qualifier without a year (`_(film)`) marks a film, others (`_(miniseries)`, `_(TV_series)`) do not;
  * the `entity_name` strings of rows that recommend it (`Police Academy (1984)` in ReDial, bare titles in
    INSPIRED). The README says the last len(rec) names are the targets', but names are missing for a
    quarter of ReDial rows and out of order in INSPIRED, so each name is paired with the target whose URI
    title it resembles most (rapidfuzz ratio >= `NAME_PAIRING_CUTOFF`) instead of by position;
  * `Title (Year)` in the dialogue text (ReDial writes every mention that way): the URI title followed by a
    year gives that entity's year.

`CatalogueMatcher` then matches (title, year) against the catalogue: every MovieLens title gives aliases
(`serving.linking.title_names`: "X, The" -> "The X", alternate titles in parentheses, a.k.a.), normalised
to lower-case words without accents or punctuation and without a leading article. An exact alias wins, else
the rapidfuzz ratio must reach `min_score` (fuzzy matches need a known year and a title of `MIN_FUZZY_CHARS`). A known year must agree within `year_tolerance` (release years
differ by one between sources); a year mismatch rejects the candidate. The part before a colon or a
spaced dash ("Star Wars: Episode IV - A New Hope" -> "star wars", "star wars episode iv") only counts when
the years agree. Ties go to the closer
year, the higher score, then the more popular movie.

Entities that are never targets are linked only when they look like films (a year or a film qualifier):
`prev_entity` also lists people, genres and countries, which must not become movies by accident.
"""

from __future__ import annotations

import re
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, computed_field
from rapidfuzz import fuzz, process

from retrieval.catalogue import Catalogue
from retrieval.data import parse_title
from serving.linking import ARTICLES, title_names, tokenise

DBPEDIA_PREFIX = "http://dbpedia.org/resource/"
NAME_PAIRING_CUTOFF = 80.0
"""A target name is paired with a target entity when their titles' ratio reaches this."""
HEAD_SEPARATORS = (":", " - ")
"""A title's part before these is an alias when the years agree: "Avengers: Infinity War - Part I" is
also "Avengers: Infinity War" (and "Avengers")."""
MIN_FUZZY_CHARS = 10
"""Titles shorter than this (normalised) only match exactly: "haunted" ~ "hunted" is a different film."""

_QUALIFIER = re.compile(r"^(?P<title>.+?)\s*\((?P<qualifier>[^()]*)\)$")
_FILM_QUALIFIER = re.compile(r"^(?:(?P<year>(?:18|19|20)\d\d)\s+)?(?:[\w ]+\s)?film$", re.I)


class EntityLink(BaseModel):
    """What one dataset entity id linked to. `item_id` None: no catalogue movie matched (`reason` says why)."""

    model_config = ConfigDict(frozen=True)

    entity_id: int
    uri: str | None = None
    title: str = Field(description="The title matched against the catalogue.")
    year: int | None = None
    item_id: int | None = None
    catalogue_title: str | None = None
    score: float = Field(0.0, description="100 for an exact alias, else the rapidfuzz ratio.")
    method: Literal["exact", "fuzzy", "none"] = "none"
    reason: str | None = Field(None, description="Why nothing matched.")


class LinkingStats(BaseModel):
    """Match rates of one dataset: per target occurrence (a row's target) and per distinct target entity."""

    dataset: str
    target_occurrences: int
    target_occurrences_linked: int
    target_entities: int
    target_entities_linked: int
    mention_entities: int = Field(description="Distinct film-like entities mentioned earlier in dialogues.")
    mention_entities_linked: int
    unmatched_examples: list[str] = Field(default_factory=list, description="Most frequent unmatched targets.")

    @computed_field
    @property
    def match_rate(self) -> float:
        """Share of target occurrences (evaluation rows) with a catalogue movie."""
        return self.target_occurrences_linked / self.target_occurrences if self.target_occurrences else 0.0

    @computed_field
    @property
    def entity_match_rate(self) -> float:
        return self.target_entities_linked / self.target_entities if self.target_entities else 0.0


class EntityMapping(BaseModel):
    """The entity -> catalogue mapping of one dataset, written as JSON beside the report."""

    dataset: str
    catalogue_size: int
    links: dict[int, EntityLink]
    stats: LinkingStats

    def item_id(self, entity_id: int) -> int | None:
        link = self.links.get(entity_id)
        return link.item_id if link is not None else None


@dataclass(frozen=True)
class _Alias:
    row: int
    head_only: bool  # the part before a colon, not a full title


def title_key(name: str) -> str:
    """Normalised words of a title without a leading article: "The Lion King!" -> "lion king"."""
    words = [t.norm for t in tokenise(name)]
    if len(words) > 1 and words[0] in ARTICLES:
        words = words[1:]
    return " ".join(words)


def parse_dbpedia_uri(uri: str) -> tuple[str, int | None, bool | None]:
    """`<http://dbpedia.org/resource/Water_(1985_film)>` -> ("Water", 1985, True).

    The third value says whether the qualifier marks a film: True for `(film)` / `(1985 film)` /
    `(American film)`, False for any other qualifier (`(miniseries)`, `(novel)`), None without a qualifier.
    """
    text = uri.strip().strip("<>")
    if text.startswith(DBPEDIA_PREFIX):
        text = text[len(DBPEDIA_PREFIX) :]
    text = urllib.parse.unquote(text).replace("_", " ").strip()
    match = _QUALIFIER.match(text)
    if match is None:
        return text, None, None
    film = _FILM_QUALIFIER.match(match["qualifier"].strip())
    if film is None:
        return match["title"], None, False
    return match["title"], int(film["year"]) if film["year"] else None, True


class CatalogueMatcher:
    """Matches (title, year) to catalogue ids. `popularity` `[n_items]` (catalogue rows) breaks ties."""

    def __init__(
        self,
        catalogue: Catalogue,
        popularity: Sequence[float] | np.ndarray | None = None,
        min_score: float = 90.0,
        year_tolerance: int = 1,
    ):
        self.catalogue = catalogue
        self.popularity = np.zeros(len(catalogue)) if popularity is None else np.asarray(popularity, dtype=float)
        if self.popularity.shape != (len(catalogue),):
            raise ValueError(f"popularity needs one value per catalogue row ({len(catalogue)})")
        self.min_score = min_score
        self.year_tolerance = year_tolerance
        self._aliases: dict[str, list[_Alias]] = defaultdict(list)
        for row, movie in enumerate(catalogue):
            keys: dict[str, bool] = {}
            for name in title_names(movie.title):
                keys.setdefault(title_key(name), False)
                keys.setdefault(title_key(name).replace(" ", ""), False)  # "Old Boy" is also written "Oldboy"
                for separator in HEAD_SEPARATORS:
                    head, found, _ = name.partition(separator)
                    if found and head.strip():
                        keys.setdefault(title_key(head), True)
            for key, head_only in keys.items():
                if key:
                    self._aliases[key].append(_Alias(row, head_only))
        self._keys = list(self._aliases)

    def match(self, title: str, year: int | None) -> tuple[int | None, float, str]:
        """(catalogue id or None, score, method or reason)."""
        key = title_key(title)
        if not key:
            return None, 0.0, "empty title"
        scored: list[tuple[str, float]] = [(key, 100.0)] if key in self._aliases else []
        if not scored and year is not None and len(key) >= MIN_FUZZY_CHARS:
            found = process.extract(key, self._keys, scorer=fuzz.ratio, score_cutoff=self.min_score, limit=8)
            scored = [(choice, float(score)) for choice, score, _ in found]
        if not scored:
            return None, 0.0, "no catalogue title is similar enough" if year is not None else "no exact title (no year)"
        best: tuple[tuple, int, float] | None = None
        rejected_year = False
        for alias_key, score in scored:
            for alias in self._aliases[alias_key]:
                movie_year = self.catalogue.movies[alias.row].year
                gap = abs(movie_year - year) if (year is not None and movie_year is not None) else None
                if gap is not None and gap > self.year_tolerance:
                    rejected_year = True
                    continue
                if alias.head_only and gap is None:
                    continue
                rank = (gap is not None, -(gap or 0), score, not alias.head_only, self.popularity[alias.row], -alias.row)
                if best is None or rank > best[0]:
                    best = (rank, alias.row, score)
        if best is None:
            return None, 0.0, "title found but the year differs" if rejected_year else "only a partial title matched"
        _, row, score = best
        return int(self.catalogue.ids[row]), score, "exact" if score == 100.0 else "fuzzy"


class CRSRow(BaseModel):
    """One line of a CRSLab-style file (see ../shared/data/README.md). Unused fields are ignored."""

    context: list[str]
    resp: str = ""
    rec: list[int] = Field(default_factory=list)
    entity: list[int] = Field(default_factory=list)
    entity_name: list[str] = Field(default_factory=list)
    prev_entity: list[int] = Field(default_factory=list)
    dialog_id: str
    turn_id: str | int


@dataclass
class _Evidence:
    uri_title: str | None = None
    uri_year: int | None = None
    film_qualifier: bool | None = None
    names: Counter[tuple[str, int | None]] = field(default_factory=Counter)
    text_years: Counter[int] = field(default_factory=Counter)


def link_entities(
    dataset: str,
    rows: Sequence[CRSRow],
    entity2id: dict[str, int],
    matcher: CatalogueMatcher,
    n_unmatched_examples: int = 20,
) -> EntityMapping:
    """Link every target and film-like mentioned entity of `rows`; count what did not link."""
    uri_of = {eid: uri for uri, eid in entity2id.items()}
    target_ids = {e for row in rows for e in row.rec}
    mention_ids = {e for row in rows for e in row.prev_entity} - target_ids
    evidence: dict[int, _Evidence] = {}
    for eid in target_ids | mention_ids:
        ev = _Evidence()
        if eid in uri_of:
            ev.uri_title, ev.uri_year, ev.film_qualifier = parse_dbpedia_uri(uri_of[eid])
        evidence[eid] = ev
    for row in rows:
        _pair_names(row, evidence)
        _years_in_text(row, evidence)

    links: dict[int, EntityLink] = {}
    for eid in sorted(target_ids | mention_ids):
        ev = evidence[eid]
        is_target = eid in target_ids
        if not is_target and not _film_like(ev):
            continue
        links[eid] = _link_one(eid, uri_of.get(eid), ev, matcher)

    occurrences = [e for row in rows for e in row.rec]
    linked_occ = [e for e in occurrences if links[e].item_id is not None]
    unmatched = Counter(_label(links[e]) for e in occurrences if links[e].item_id is None)
    mentions_considered = [e for e in mention_ids if e in links]
    stats = LinkingStats(
        dataset=dataset,
        target_occurrences=len(occurrences),
        target_occurrences_linked=len(linked_occ),
        target_entities=len(target_ids),
        target_entities_linked=sum(links[e].item_id is not None for e in target_ids),
        mention_entities=len(mentions_considered),
        mention_entities_linked=sum(links[e].item_id is not None for e in mentions_considered),
        unmatched_examples=[f"{label} x{n}" for label, n in unmatched.most_common(n_unmatched_examples)],
    )
    return EntityMapping(dataset=dataset, catalogue_size=len(matcher.catalogue), links=links, stats=stats)


def _pair_names(row: CRSRow, evidence: dict[int, _Evidence]) -> None:
    """Pair the row's `entity_name` strings with its targets by title similarity (each name used once)."""
    parsed = [parse_title(urllib.parse.unquote(name)) for name in row.entity_name]
    free = set(range(len(parsed)))
    pairs = []
    for eid in dict.fromkeys(row.rec):
        title = evidence[eid].uri_title
        if not title:
            continue
        for i, (name_title, _) in enumerate(parsed):
            score = fuzz.ratio(title_key(title), title_key(name_title))
            if score >= NAME_PAIRING_CUTOFF:
                pairs.append((score, eid, i))
    paired: set[int] = set()
    for _, eid, i in sorted(pairs, key=lambda p: -p[0]):
        if i in free and eid not in paired:
            free.discard(i)
            paired.add(eid)
            evidence[eid].names[parsed[i]] += 1


def _years_in_text(row: CRSRow, evidence: dict[int, _Evidence]) -> None:
    """Years written right after an entity's title in the dialogue ("Super Troopers (2001)")."""
    text = "\n".join([*row.context, row.resp])
    for eid in set(row.rec) | set(row.prev_entity):
        ev = evidence.get(eid)
        if ev is None or not ev.uri_title:
            continue
        pattern = r"(?<![\w'])" + re.escape(ev.uri_title) + r"\s*\(((?:18|19|20)\d\d)\)"
        for match in re.finditer(pattern, text, flags=re.IGNORECASE):
            ev.text_years[int(match.group(1))] += 1


def _film_like(ev: _Evidence) -> bool:
    return bool(ev.film_qualifier) or ev.uri_year is not None or bool(ev.text_years) or bool(ev.names)


def _attempts(ev: _Evidence) -> list[tuple[str, int | None]]:
    """(title, year) pairs to try, best evidence first: the names people wrote (most frequent first), then the
    URI title with the year written after it in the dialogues, then with the URI's own year.

    The dataset's DBpedia links are sometimes wrong (`The_Incredibles_(film_score)` for "The Incredibles
    (2004)", `Click_(2010_film)` where the dialogue says "Click (2006)"), so what people wrote outranks the URI.
    """
    text_year = ev.text_years.most_common(1)[0][0] if ev.text_years else None
    years = list(dict.fromkeys(y for y in (text_year, ev.uri_year) if y is not None)) or [None]
    attempts = [
        (title, year if year is not None else fallback)
        for (title, year), _ in ev.names.most_common()
        for fallback in years
    ]
    if ev.uri_title and (ev.film_qualifier is not False or not ev.names):
        attempts += [(ev.uri_title, year) for year in years]
    return list(dict.fromkeys((title, year) for title, year in attempts if title))


def _link_one(eid: int, uri: str | None, ev: _Evidence, matcher: CatalogueMatcher) -> EntityLink:
    if ev.film_qualifier is False and not ev.names:
        return EntityLink(entity_id=eid, uri=uri, title=ev.uri_title or "", reason="not a film (DBpedia qualifier)")
    attempts = _attempts(ev)
    if not attempts:
        return EntityLink(entity_id=eid, uri=uri, title="", reason="no title (id not in entity2id, no name)")
    reason = ""
    for title, year in attempts:
        item_id, score, how = matcher.match(title, year)
        if item_id is not None:
            return EntityLink(
                entity_id=eid, uri=uri, title=title, year=year, item_id=item_id,
                catalogue_title=matcher.catalogue[item_id].display_title, score=score, method=how,
            )
        reason = reason or how
    title, year = attempts[0]
    return EntityLink(entity_id=eid, uri=uri, title=title, year=year, reason=reason)


def _label(link: EntityLink) -> str:
    return f"{link.title} ({link.year})" if link.year else link.title

