"""The item text used in phase 1, phase 2 answers and prompts."""

from __future__ import annotations

from retrieval.catalogue import Movie

NO_GENRES = "(no genres listed)"


def describe(movie: Movie) -> str:
    """`Title (Year). Genres: A, B, C`, e.g. "Toy Story (1995). Genres: Adventure, Animation, Children".

    Without genres (or MovieLens' "(no genres listed)") it is just the display title.
    """
    genres = [g for g in movie.genres if g != NO_GENRES]
    return f"{movie.display_title}. Genres: {', '.join(genres)}" if genres else movie.display_title


def parse_description(text: str) -> tuple[str, tuple[str, ...]]:
    """Inverse of `describe` for generated text: (display title, genres). Tolerates missing genres."""
    title, sep, genres = text.strip().partition(". Genres:")
    if not sep:
        return title.strip(), ()
    return title.strip(), tuple(g.strip() for g in genres.split(",") if g.strip())
