"""The item text used in phase 1, phase 2 answers and prompts."""

from __future__ import annotations

import re

from retrieval.catalogue import Movie

NO_GENRES = "(no genres listed)"
GENRES_LABEL = re.compile(r"[\s.,;\-–—]*\bgenres?\s*[:\-–—]\s*", re.IGNORECASE)
TITLE_LABEL = re.compile(r"^(?:title|movie)\s*:\s*", re.IGNORECASE)
TITLE_WITH_YEAR = re.compile(r"^(.*?\(\d{4}\))")
GENRE_SEPARATOR = re.compile(r"\s*(?:,|/|\||\band\b)\s*")
DECORATION = " \t\"'*`“”.-–—"
GENRE_DECORATION = DECORATION + "()[]"


def describe(movie: Movie) -> str:
    """`Title (Year). Genres: A, B, C`, e.g. "Toy Story (1995). Genres: Adventure, Animation, Children".

    Without genres (or MovieLens' "(no genres listed)") it is just the display title.
    """
    genres = [g for g in movie.genres if g != NO_GENRES]
    return f"{movie.display_title}. Genres: {', '.join(genres)}" if genres else movie.display_title


def parse_description(text: str) -> tuple[str, tuple[str, ...]]:
    """Inverse of `describe` for generated text: (display title, genres), tolerant of a small LLM's layouts.

    Accepted besides `describe`'s own form: a "Title:" label, quotes or markdown around the title, "Genres"
    after a newline, dash or colon, genres split by commas, slashes, bars or "and", and a title with a year
    followed by prose ("Heat (1995) is a crime film" -> "Heat (1995)"). Missing genres give ().
    """
    head, *rest = GENRES_LABEL.split(text.strip(), maxsplit=1)
    lines = TITLE_LABEL.sub("", head.strip()).splitlines() or [""]
    title = lines[0].strip(DECORATION)
    with_year = TITLE_WITH_YEAR.match(title)
    if with_year:
        title = with_year.group(1).strip(DECORATION)
    if not rest:
        return title, ()
    genres = (rest[0].strip().splitlines() or [""])[0]
    return title, tuple(g for part in GENRE_SEPARATOR.split(genres) if (g := part.strip(GENRE_DECORATION)))
