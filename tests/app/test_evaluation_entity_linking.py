"""Entity linking of CRSLab-style ids (DBpedia URIs, `Title (Year)` names) to the synthetic catalogue."""

from __future__ import annotations

import pytest

from app.evaluation.entity_linking import CatalogueMatcher, CRSRow, link_entities, parse_dbpedia_uri, title_key
from retrieval.data import load_movielens


@pytest.fixture(scope="module")
def catalogue(movielens_dir):
    return load_movielens("ml-latest-small", path=movielens_dir, download=False).catalogue


@pytest.fixture(scope="module")
def matcher(catalogue):
    return CatalogueMatcher(catalogue)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("<http://dbpedia.org/resource/Water_(1985_film)>", ("Water", 1985, True)),
        ("<http://dbpedia.org/resource/Deadpool_(film)>", ("Deadpool", None, True)),
        ("<http://dbpedia.org/resource/Frozen_(2010_American_film)>", ("Frozen", 2010, True)),
        ("<http://dbpedia.org/resource/It_(miniseries)>", ("It", None, False)),
        ("<http://dbpedia.org/resource/What_About_Bob%3F>", ("What About Bob?", None, None)),
        ("<http://dbpedia.org/resource/Star_Wars:_The_Last_Jedi>", ("Star Wars: The Last Jedi", None, None)),
    ],
)
def test_parse_dbpedia_uri(uri, expected):
    assert parse_dbpedia_uri(uri) == expected


def test_title_key_drops_article_case_and_punctuation():
    assert title_key("The Lion King!") == "lion king"
    assert title_key("Amélie") == "amelie"


@pytest.mark.parametrize(
    ("title", "year", "item_id", "method"),
    [
        ("Toy Story", 1995, 1, "exact"),
        ("The Lion King", 1994, 6, "exact"),  # MovieLens writes "Lion King, The"
        ("Lion King", None, 6, "exact"),
        ("Seven", 1995, 11, "exact"),  # alternate title in parentheses: "Se7en (a.k.a. Seven)"
        ("Monsters Inc.", 2001, 3, "exact"),  # punctuation
        ("Spirited Away", 2001, 9, "exact"),
        ("The Silence of the Lamb", 1991, 12, "fuzzy"),  # typo, year agrees
        ("Terminator 2", 1991, 30, "exact"),  # the part before a colon, year agrees
        ("Heat", 1996, 17, "exact"),  # one year off is tolerated
    ],
)
def test_matches(matcher, title, year, item_id, method):
    found, score, how = matcher.match(title, year)
    assert (found, how) == (item_id, method)
    assert score == 100.0 if method == "exact" else 90.0 <= score < 100.0


@pytest.mark.parametrize(
    ("title", "year", "reason"),
    [
        ("Heat", 1986, "title found but the year differs"),
        ("Avengers: Infinity War", 2018, "no catalogue title is similar enough"),
        ("The Silence of the Lamb", None, "no exact title (no year)"),  # fuzzy needs a year
        ("Terminator 2", None, "only a partial title matched"),  # colon heads need a year
        ("Hunted", 1995, "no catalogue title is similar enough"),  # short titles only match exactly
    ],
)
def test_rejections_say_why(matcher, title, year, reason):
    assert matcher.match(title, year) == (None, 0.0, reason)


def test_popularity_breaks_ties(catalogue):
    from retrieval.catalogue import Catalogue, Movie

    remakes = Catalogue([Movie(item_id=1, title="Solaris", year=1972), Movie(item_id=2, title="Solaris", year=2002)])
    assert CatalogueMatcher(remakes, popularity=[1, 5]).match("Solaris", None)[0] == 2
    assert CatalogueMatcher(remakes, popularity=[5, 1]).match("Solaris", None)[0] == 1
    assert CatalogueMatcher(remakes, popularity=[1, 5]).match("Solaris", 1972)[0] == 1  # the year decides first


ENTITY2ID = {
    "<http://dbpedia.org/resource/Toy_Story>": 100,
    "<http://dbpedia.org/resource/The_Lion_King>": 101,
    "<http://dbpedia.org/resource/Heat_(1986_film)>": 102,
    "<http://dbpedia.org/resource/Avengers:_Infinity_War>": 104,
    "<http://dbpedia.org/resource/Tom_Hanks>": 105,
    "<http://dbpedia.org/resource/The_Matrix_(soundtrack)>": 107,
}


def test_link_entities_counts_matches_and_misses(matcher):
    rows = [
        CRSRow(context=["", "I loved Toy Story (1995)"], resp="Try The Lion King (1994)", rec=[101],
               entity_name=["The Lion King (1994)"], prev_entity=[100, 105], dialog_id="d1", turn_id=1),
        # names out of order and a wrong DBpedia link (the soundtrack): the written name wins
        CRSRow(context=["", "More?"], resp="The Matrix (1999) and Heat (1986), or Avengers: Infinity War (2018)",
               rec=[107, 102, 104], entity_name=["Heat (1986)", "The Matrix (1999)"], prev_entity=[],
               dialog_id="d2", turn_id=2),
        CRSRow(context=["", "Again"], resp="The Lion King (1994)", rec=[101], entity_name=[], dialog_id="d3", turn_id=3),
    ]
    mapping = link_entities("toy", rows, ENTITY2ID, matcher)
    assert mapping.item_id(101) == 6
    assert mapping.item_id(107) == 29
    assert mapping.links[107].title == "The Matrix" and mapping.links[107].year == 1999
    assert mapping.item_id(100) == 1  # a mention: film-like because the dialogue writes a year after it
    assert 105 not in mapping.links  # a person: never linked
    assert mapping.links[102].item_id is None and mapping.links[102].reason == "title found but the year differs"
    assert mapping.links[104].item_id is None
    stats = mapping.stats
    assert (stats.target_occurrences, stats.target_occurrences_linked) == (5, 3)
    assert (stats.target_entities, stats.target_entities_linked) == (4, 2)
    assert stats.match_rate == pytest.approx(0.6)
    assert stats.entity_match_rate == pytest.approx(0.5)
    assert (stats.mention_entities, stats.mention_entities_linked) == (1, 1)
    # the year written after the title in the dialogue completes the URI title
    assert stats.unmatched_examples == ["Heat (1986) x1", "Avengers: Infinity War (2018) x1"]
    assert mapping.model_dump(mode="json")["stats"]["match_rate"] == pytest.approx(0.6)


def test_part_before_a_spaced_dash_is_an_alias_when_years_agree():
    from retrieval.catalogue import Catalogue, Movie

    marvel = Catalogue([Movie(item_id=7, title="Avengers: Infinity War - Part I", year=2018),
                        Movie(item_id=8, title="Spider-Man", year=2002)])
    matcher = CatalogueMatcher(marvel)
    assert matcher.match("Avengers: Infinity War", 2018) == (7, 100.0, "exact")
    assert matcher.match("Avengers: Infinity War", 2012) == (None, 0.0, "title found but the year differs")
    assert matcher.match("Avengers: Infinity War", None) == (None, 0.0, "only a partial title matched")
    assert matcher.match("Spider", 2002) == (None, 0.0, "no catalogue title is similar enough")  # "-" unspaced
    assert matcher.match("Spiderman", 2002) == (8, 100.0, "exact")  # words run together
