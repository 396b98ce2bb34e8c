import importlib.util
import sqlite3

import pytest

from ilm_model import metadata
from ilm_model.errors import MissingAssetError
from ilm_model.metadata import MovieFacts, enriched_text, join_facts, read_facts, title_key
from retrieval.catalogue import Catalogue, Movie


def test_title_key_normalises_movielens_and_omdb_spellings():
    assert title_key("Lion King, The") == title_key("The Lion King") == "thelionking"
    assert title_key("Se7en (a.k.a. Seven)") == "se7en"
    assert title_key("Amelie (Fabuleux destin d'Amélie Poulain, Le)") == title_key("Amélie") == "amelie"
    assert title_key("Monsters, Inc.") == "monstersinc"


def _db(path):
    with sqlite3.connect(path) as c:
        c.execute('CREATE TABLE omdb ("Title" TEXT, "Year" INTEGER, "Director" TEXT, "Cast" TEXT)')
        c.executemany(
            "INSERT INTO omdb VALUES (?, ?, ?, ?)",
            [("The Lion King", 1994, "Roger Allers", "Jeremy Irons, Matthew Broderick"),
             ("Heat", 1986, "Dick Richards", "Burt Reynolds"),  # same title, other year: no match for 1995
             ("Heat", 1995, "Michael Mann", "Al Pacino, Robert De Niro, Val Kilmer, Jon Voight"),
             ("Nobody", 2000, "", "")],  # nothing to add: left out
        )
    return path


def test_join_on_title_and_year_and_enriched_text(tmp_path, caplog):
    facts = read_facts(_db(tmp_path / "movies.db"))
    assert len(facts) == 3 and ("nobody", 2000) not in facts
    catalogue = Catalogue([
        Movie(item_id=1, title="Lion King, The", year=1994), Movie(item_id=2, title="Heat", year=1995),
        Movie(item_id=3, title="Up", year=2009), Movie(item_id=4, title="Heat"),
    ])
    with caplog.at_level("INFO"):
        joined = join_facts(catalogue, facts)
    assert joined == {0: facts[("thelionking", 1994)], 1: facts[("heat", 1995)]}
    assert "2 of 4 catalogue items matched" in caplog.text
    assert enriched_text("Heat (1995)", joined[1]) == (
        "Heat (1995). Director: Michael Mann. Cast: Al Pacino, Robert De Niro, Val Kilmer"
    )
    assert enriched_text("Up (2009)", None) == "Up (2009)"
    assert enriched_text("X", MovieFacts(director="", cast="A")) == "X. Cast: A"


def test_missing_wheel_names_the_pip_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "bokeh_sampledata" else real(n, *a))
    with pytest.raises(MissingAssetError, match="pip install bokeh-sampledata"):
        metadata.movies_db()
