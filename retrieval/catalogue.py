"""The item catalogue: catalogue ids <-> dense rows, with the metadata every layer shows or filters on."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from retrieval.errors import DataError, UnknownItemError
from retrieval.storage import write_atomic


class Movie(BaseModel):
    """One catalogue item. `item_id` is the dataset's own id (MovieLens movieId)."""

    model_config = ConfigDict(frozen=True)

    item_id: int
    title: str
    year: int | None = None
    genres: tuple[str, ...] = ()

    @property
    def display_title(self) -> str:
        """`Title (Year)`, the form people and ReDial logs use."""
        return f"{self.title} ({self.year})" if self.year else self.title


class Catalogue:
    """Ordered movies; row r of every embedding table belongs to `movies[r]`.

    Boundaries (API, session state, logs) speak catalogue ids; only models index by row.
    """

    def __init__(self, movies: Iterable[Movie]):
        self.movies: list[Movie] = list(movies)
        self.ids = np.fromiter((m.item_id for m in self.movies), dtype=np.int64, count=len(self.movies))
        self._row_of: dict[int, int] = {int(i): r for r, i in enumerate(self.ids)}
        if len(self._row_of) != len(self.movies):
            raise DataError("catalogue has duplicate item ids")

    def __len__(self) -> int:
        return len(self.movies)

    def __iter__(self) -> Iterator[Movie]:
        return iter(self.movies)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._row_of

    def __getitem__(self, item_id: int) -> Movie:
        return self.movies[self.row(item_id)]

    def row(self, item_id: int) -> int:
        """Dense row of a catalogue id; UnknownItemError when absent."""
        try:
            return self._row_of[int(item_id)]
        except KeyError:
            raise UnknownItemError(f"item {item_id} is not in the catalogue") from None

    def rows(self, item_ids: Sequence[int]) -> np.ndarray:
        """Rows of several catalogue ids, `[len(item_ids)]` int64."""
        return np.asarray([self.row(i) for i in item_ids], dtype=np.int64)

    def item_ids(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Catalogue ids of dense rows."""
        return self.ids[np.asarray(rows, dtype=np.int64)]

    def genres(self) -> list[str]:
        """All genres present, sorted."""
        return sorted({g for m in self.movies for g in m.genres})

    def save(self, path: Path) -> None:
        """Write the catalogue as JSON, atomically."""
        payload = [m.model_dump() for m in self.movies]
        write_atomic(path, json.dumps(payload).encode())

    @classmethod
    def load(cls, path: Path) -> Catalogue:
        try:
            return cls(Movie.model_validate(m) for m in json.loads(Path(path).read_text()))
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: unreadable catalogue ({exc}); delete it to rebuild") from None
