"""Richer public item text: director and cast from the CC0 OMDb table `movies.db` shipped in the
`bokeh-sampledata` wheel (17,472 films, 1940-2014), joined to the catalogue by normalised title and year.

The package is located with `importlib.util.find_spec` and never imported; only its SQLite file is read.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import sqlite3
import unicodedata
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from ilm_model.errors import MissingAssetError
from retrieval.catalogue import Catalogue

logger = logging.getLogger(__name__)

PACKAGE = "bokeh_sampledata"
PIP_NAME = "bokeh-sampledata"
_ARTICLE = re.compile(r"^(?P<rest>.*), (?P<article>the|a|an|les|la|le|l'|il|el|die|der|das)$")
_ALTERNATE = re.compile(r"\s*\((?:a\.k\.a\.|aka)?[^)]*\)\s*$")


@dataclass(frozen=True)
class MovieFacts:
    """Director(s) and cast of one film, as in the OMDb table (comma-separated names; the cast is in
    alphabetical order there, not by billing)."""

    director: str
    cast: str


def movies_db() -> Path:
    """Path of `movies.db` inside the installed `bokeh-sampledata` wheel."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingAssetError(f"the CC0 movie table is not installed: run `pip install {PIP_NAME}`")
    path = Path(spec.submodule_search_locations[0]) / "_data" / "movies.db"
    if not path.is_file():
        raise MissingAssetError(f"{path} is missing: reinstall with `pip install {PIP_NAME}`")
    return path


def title_key(title: str) -> str:
    """Join key of a title: alternate titles in final parentheses dropped, a trailing ", The" (MovieLens style)
    moved to the front, accents stripped, lower case, only letters and digits kept.

    "Lion King, The" and "The Lion King" -> "thelionking"; "Se7en (a.k.a. Seven)" -> "se7en".
    """
    text = title.strip()
    while True:
        shorter = _ALTERNATE.sub("", text)
        if shorter == text or not shorter:
            break
        text = shorter
    text = text.lower()
    match = _ARTICLE.match(text)
    if match:
        text = f"{match['article']} {match['rest']}"
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]", "", text)


def read_facts(path: Path) -> dict[tuple[str, int], MovieFacts]:
    """(title_key, year) -> facts for every OMDb row with a director or a cast (first row wins)."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
        rows = connection.execute('SELECT Title, Year, Director, "Cast" FROM omdb').fetchall()
    out: dict[tuple[str, int], MovieFacts] = {}
    for title, year, director, cast in rows:
        if title and year and (director or cast):
            out.setdefault((title_key(title), int(year)), MovieFacts(director or "", cast or ""))
    return out


def join_facts(catalogue: Catalogue, facts: dict[tuple[str, int], MovieFacts]) -> dict[int, MovieFacts]:
    """Catalogue row -> facts, matched on (title_key, year); logs the match rate."""
    joined = {
        row: facts[(title_key(movie.title), movie.year)]
        for row, movie in enumerate(catalogue)
        if movie.year is not None and (title_key(movie.title), movie.year) in facts
    }
    logger.info("item metadata: %d of %d catalogue items matched the OMDb table (%.1f%%)",
                len(joined), len(catalogue), 100 * len(joined) / max(1, len(catalogue)))
    return joined


def enriched_text(base: str, facts: MovieFacts | None, max_cast: int = 3) -> str:
    """`base` (e.g. `describe(movie)`) + ". Director: D. Cast: A, B, C" where known (cast cut to `max_cast`)."""
    if facts is None:
        return base
    parts = [base]
    if facts.director:
        parts.append(f"Director: {facts.director}")
    names = [n.strip() for n in facts.cast.split(",") if n.strip()][:max_cast]
    if names:
        parts.append(f"Cast: {', '.join(names)}")
    return ". ".join(parts)
