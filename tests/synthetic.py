"""Small synthetic MovieLens-format data with real structure, so models can learn something testable.

Movies fall into genre clusters; each user likes one or two clusters and rates mostly inside them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# (title, year, genres): real titles so linking and dialogue tests read naturally.
MOVIES: list[tuple[str, int, str]] = [
    ("Toy Story", 1995, "Adventure|Animation|Children|Comedy|Fantasy"),
    ("Finding Nemo", 2003, "Adventure|Animation|Children|Comedy"),
    ("Monsters, Inc.", 2001, "Adventure|Animation|Children|Comedy|Fantasy"),
    ("Up", 2009, "Adventure|Animation|Children|Drama"),
    ("Shrek", 2001, "Adventure|Animation|Children|Comedy|Fantasy|Romance"),
    ("Lion King, The", 1994, "Adventure|Animation|Children|Drama|Musical|IMAX"),
    ("Aladdin", 1992, "Adventure|Animation|Children|Comedy|Musical"),
    ("Ratatouille", 2007, "Animation|Children|Drama"),
    ("Spirited Away (Sen to Chihiro no kamikakushi)", 2001, "Adventure|Animation|Fantasy"),
    ("Coraline", 2009, "Animation|Fantasy|Thriller"),
    ("Se7en (a.k.a. Seven)", 1995, "Mystery|Thriller"),
    ("Silence of the Lambs, The", 1991, "Crime|Horror|Thriller"),
    ("Fight Club", 1999, "Action|Crime|Drama|Thriller"),
    ("Memento", 2000, "Mystery|Thriller"),
    ("Shining, The", 1980, "Horror"),
    ("Usual Suspects, The", 1995, "Crime|Mystery|Thriller"),
    ("Heat", 1995, "Action|Crime|Thriller"),
    ("Prisoners", 2013, "Drama|Mystery|Thriller"),
    ("Zodiac", 2007, "Crime|Drama|Thriller"),
    ("Gone Girl", 2014, "Drama|Thriller"),
    ("Notting Hill", 1999, "Comedy|Romance"),
    ("Love Actually", 2003, "Comedy|Drama|Romance"),
    ("Pretty Woman", 1990, "Comedy|Romance"),
    ("When Harry Met Sally...", 1989, "Comedy|Romance"),
    ("Sleepless in Seattle", 1993, "Comedy|Drama|Romance"),
    ("Amelie (Fabuleux destin d'Amélie Poulain, Le)", 2001, "Comedy|Romance"),
    ("Groundhog Day", 1993, "Comedy|Fantasy|Romance"),
    ("Clueless", 1995, "Comedy|Romance"),
    ("Matrix, The", 1999, "Action|Sci-Fi|Thriller"),
    ("Terminator 2: Judgment Day", 1991, "Action|Sci-Fi"),
    ("Alien", 1979, "Horror|Sci-Fi"),
    ("Blade Runner", 1982, "Action|Sci-Fi|Thriller"),
    ("Inception", 2010, "Action|Crime|Drama|Mystery|Sci-Fi|Thriller|IMAX"),
    ("Interstellar", 2014, "Sci-Fi|IMAX"),
    ("Star Wars: Episode IV - A New Hope", 1977, "Action|Adventure|Sci-Fi"),
    ("Back to the Future", 1985, "Adventure|Comedy|Sci-Fi"),
    ("Godfather, The", 1972, "Crime|Drama"),
    ("Goodfellas", 1990, "Crime|Drama"),
    ("Pulp Fiction", 1994, "Comedy|Crime|Drama|Thriller"),
    ("Departed, The", 2006, "Crime|Drama|Thriller"),
]
CLUSTERS: list[range] = [range(0, 10), range(10, 20), range(20, 28), range(28, 36), range(36, 40)]


def write_movielens(folder: Path, n_users: int = 120, seed: int = 0) -> Path:
    """Write `movies.csv` and `ratings.csv` in GroupLens ml-latest format into `folder`; return it."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "movies.csv", "w", encoding="utf-8") as fh:
        fh.write("movieId,title,genres\n")
        for i, (title, year, genres) in enumerate(MOVIES):
            quoted = f'"{title} ({year})"' if "," in title else f"{title} ({year})"
            fh.write(f"{i + 1},{quoted},{genres}\n")
    with open(folder / "ratings.csv", "w", encoding="utf-8") as fh:
        fh.write("userId,movieId,rating,timestamp\n")
        for user in range(1, n_users + 1):
            liked = rng.choice(len(CLUSTERS), size=rng.integers(1, 3), replace=False)
            pool = [i for c in liked for i in CLUSTERS[c]]
            n_in = int(rng.integers(min(4, len(pool)), min(12, len(pool)) + 1))
            items = list(rng.choice(pool, size=n_in, replace=False))
            others = [i for i in range(len(MOVIES)) if i not in pool]
            items_out = list(rng.choice(others, size=2, replace=False))
            t = 1_000_000_000 + user * 10_000
            for k, item in enumerate(items):
                fh.write(f"{user},{item + 1},{rng.choice([4.0, 4.5, 5.0])},{t + k}\n")
            for k, item in enumerate(items_out):
                fh.write(f"{user},{item + 1},{rng.choice([1.0, 2.0, 2.5])},{t + 100 + k}\n")
    return folder
