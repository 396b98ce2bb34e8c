"""TitleLinker: tolerant matching of movie titles in free text, without everyday-word false positives."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.catalogue import Catalogue, Movie
from serving.linking import TitleLinker, title_names


@pytest.fixture(scope="module")
def linker(catalogue) -> TitleLinker:
    return TitleLinker(catalogue)


def titles(linker: TitleLinker, text: str) -> list[str]:
    return [linker.catalogue[m.item_id].title for m in linker.find(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I loved Toy Story", ["Toy Story"]),
        ("i loved TOY STORY", ["Toy Story"]),
        ("toy story (1995) was great", ["Toy Story"]),
        ("have you seen toy stroy?", ["Toy Story"]),
        ("I think findng nemo is sweet", ["Finding Nemo"]),
        ("The Lion King made me cry", ["Lion King, The"]),
        ("lion king made me cry", ["Lion King, The"]),
        ("Lion King, The", ["Lion King, The"]),
        ("i loved the silence of the lambs", ["Silence of the Lambs, The"]),
        ("I loved Se7en", ["Se7en (a.k.a. Seven)"]),
        ('I loved "Seven"', ["Se7en (a.k.a. Seven)"]),
        ("Amelie is my favourite", ["Amelie (Fabuleux destin d'Amélie Poulain, Le)"]),
        ("Le fabuleux destin d'Amélie Poulain", ["Amelie (Fabuleux destin d'Amélie Poulain, Le)"]),
        ("I adored Amélie", ["Amelie (Fabuleux destin d'Amélie Poulain, Le)"]),
        ("Sen to Chihiro no kamikakushi is a masterpiece", ["Spirited Away (Sen to Chihiro no kamikakushi)"]),
        ("what about Terminator 2?", ["Terminator 2: Judgment Day"]),
        ("I loved Toy Story and Finding Nemo", ["Toy Story", "Finding Nemo"]),
        ("Toy Story, Heat and memento", ["Toy Story", "Heat", "Memento"]),
        ("When Harry Met Sally and Monsters Inc", ["When Harry Met Sally...", "Monsters, Inc."]),
    ],
)
def test_finds_titles(linker, text, expected):
    assert titles(linker, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Can you help me set up a movie night?", []),
        ("I need to heat up some popcorn first", []),
        ("I watched seven movies last week", []),
        ("the shining sun was nice", []),
        ("an alien language", []),
        ("up", ["Up"]),
        ("I loved Up", ["Up"]),
        ("something like 'Up' please", ["Up"]),
        ("i loved up because of the balloons", ["Up"]),
        ("Heat (1995)", ["Heat"]),
        ("Memento was great", ["Memento"]),
        ("i really enjoyed the shining", ["Shining, The"]),
    ],
)
def test_single_word_titles_need_a_clear_signal(linker, text, expected):
    assert titles(linker, text) == expected


def test_mention_spans_and_scores(linker):
    text = "Honestly, toy stroy and Heat (1995) are my favourites"
    first, second = linker.find(text)
    assert text[first.start : first.end] == first.surface == "toy stroy"
    assert 0.85 <= first.score < 1.0
    assert second.surface == "Heat (1995)" and second.score == 1.0
    assert text[second.start : second.end] == "Heat (1995)"


def test_year_then_popularity_break_ties():
    remakes = Catalogue([
        Movie(item_id=10, title="Heat", year=1986, genres=("Action",)),
        Movie(item_id=20, title="Heat", year=1995, genres=("Crime",)),
        Movie(item_id=30, title="Solaris", year=1972, genres=("Sci-Fi",)),
        Movie(item_id=40, title="Solaris", year=2002, genres=("Sci-Fi",)),
    ])
    linker = TitleLinker(remakes, popularity=np.array([5.0, 50.0, 1.0, 9.0]))
    assert [m.item_id for m in linker.find("I loved Heat")] == [20]
    assert [m.item_id for m in linker.find("I loved Heat (1986)")] == [10]
    assert [m.item_id for m in linker.find("solaris 1972 or Solaris?")] == [30, 40]
    with pytest.raises(ValueError):
        TitleLinker(remakes, popularity=np.ones(3))


def test_title_names_put_articles_back():
    assert title_names("Lion King, The") == ["The Lion King"]
    assert title_names("Se7en (a.k.a. Seven)") == ["Se7en", "Seven"]
    assert title_names("Amelie (Fabuleux destin d'Amélie Poulain, Le)") == [
        "Amelie", "Le Fabuleux destin d'Amélie Poulain"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Clueless wasn't good", ["Clueless"]),
        ("interstelar was amazing", ["Interstellar"]),
        ("heat is hot today", []),
        ("have you seen Zorgon Chronicles Part Seven?", []),
        ("I watched it yesterday and loved it", []),
        ("I loved It", []),
    ],
)
def test_verdicts_capitalised_runs_and_pronouns(linker, text, expected):
    assert titles(linker, text) == expected


def test_a_year_before_the_title_is_its_year():
    remakes = Catalogue([
        Movie(item_id=1, title="Planet of the Apes", year=1968, genres=("Sci-Fi",)),
        Movie(item_id=2, title="Planet of the Apes", year=2001, genres=("Sci-Fi",)),
        Movie(item_id=3, title="2001: A Space Odyssey", year=1968, genres=("Sci-Fi",)),
    ])
    linker = TitleLinker(remakes, popularity=np.array([9.0, 1.0, 5.0]))
    (mention,) = linker.find("I liked the 2001 Planet of the Apes")
    assert mention.item_id == 2 and mention.surface == "2001 Planet of the Apes"
    assert [m.item_id for m in linker.find("I liked Planet of the Apes")] == [1]
    assert [m.item_id for m in linker.find('I loved "2001"')] == [3]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('I loved "Blorptastic Moon Warriors"', ["Blorptastic Moon Warriors"]),
        ("have you seen Zorgon Chronicles Part Seven?", ["Zorgon Chronicles Part Seven"]),
        ("I loved The Return of Zorg and Toy Story", ["The Return of Zorg"]),
        ('I loved "Toy Story"', []),
        ("I'm in New York, I loved Heat", []),
    ],
)
def test_unrecognised_titles(linker, text, expected):
    assert linker.unrecognised(text) == expected


def test_alternatives_are_kept_when_no_year_decides():
    remakes = Catalogue([
        Movie(item_id=10, title="Heat", year=1986, genres=("Action",)),
        Movie(item_id=20, title="Heat", year=1995, genres=("Crime",)),
        Movie(item_id=30, title="Heat", year=1972, genres=("Drama",)),
    ])
    linker = TitleLinker(remakes, popularity=np.array([5.0, 50.0, 1.0]))
    (chosen,) = linker.find("I loved Heat")
    assert chosen.item_id == 20 and chosen.alternatives == (10, 30)
    (dated,) = linker.find("I loved Heat (1986)")
    assert dated.item_id == 10 and dated.alternatives == ()


def test_titles_made_of_everyday_chat_words_need_quotes_capitals_or_a_year():
    catalogue = Catalogue([
        Movie(item_id=1, title="Love", year=2015), Movie(item_id=2, title="More", year=1998),
        Movie(item_id=3, title="Anything Else", year=2003), Movie(item_id=4, title="Heat", year=1995),
    ])
    linker = TitleLinker(catalogue)
    assert titles(linker, "I love Heat") == ["Heat"]
    assert titles(linker, "more") == [] and titles(linker, "anything else?") == []
    assert titles(linker, "I loved Heat and more") == ["Heat"]
    assert titles(linker, 'I watched "More" yesterday') == ["More"]
    assert titles(linker, "anything else (2003) is underrated") == ["Anything Else"]
    assert titles(linker, "I really liked Anything Else") == ["Anything Else"]


def test_invisible_characters_inside_a_title_do_not_break_it(linker):
    assert titles(linker, "I loved T\u200boy St\u00adory") == ["Toy Story"]
    assert titles(linker, "I loved \ufeffToy Story") == ["Toy Story"]


def test_a_reference_to_a_pick_is_no_typo_of_a_title():
    catalogue = Catalogue([Movie(item_id=1, title="Last Song, The", year=2010),
                           Movie(item_id=2, title="Heat", year=1995), Movie(item_id=3, title="Other One, The", year=2000)])
    linker = TitleLinker(catalogue)
    assert titles(linker, "I loved the last one") == [] and titles(linker, "the last ones were boring") == []
    assert titles(linker, "I loved the last song") == ["Last Song, The"], "a typo-free title still links"
    assert titles(linker, "I loved The Other One") == ["Other One, The"], "a title that ends in 'one' links"


def test_displayed_titles_resolve_exactly_and_by_popularity():
    catalogue = Catalogue([Movie(item_id=10, title="Emma", year=1996), Movie(item_id=20, title="Emma", year=1996),
                           Movie(item_id=30, title="Star Wars: Episode IV - A New Hope", year=1977)])
    linker = TitleLinker(catalogue, popularity=[1.0, 5.0, 2.0])
    assert linker.displayed("Emma (1996)") == 20, "the more popular of two movies shown alike"
    assert linker.displayed(" Star Wars: Episode IV - A New Hope (1977)") == 30
    assert linker.displayed("Star Wars") is None


def test_a_year_after_a_title_is_its_year_and_a_dash_part_is_optional():
    linker = TitleLinker(Catalogue([
        Movie(item_id=1, title="Inception", year=2010, genres=["Sci-Fi"]),
        Movie(item_id=2, title="2010: The Year We Make Contact", year=1984, genres=["Sci-Fi"]),
        Movie(item_id=3, title="Avengers: Infinity War - Part I", year=2018, genres=["Action"]),
        Movie(item_id=4, title="Avengers, The", year=2012, genres=["Action"]),
        Movie(item_id=5, title="Infinity", year=1996, genres=["Drama"]),
        Movie(item_id=6, title="War, The", year=1994, genres=["Drama"]),
        Movie(item_id=7, title="Heat", year=1995, genres=["Crime"]),
    ]))
    assert titles(linker, "Have you seen Inception (2010)?") == ["Inception"]
    assert titles(linker, "inception 2010 and heat") == ["Inception", "Heat"]
    assert titles(linker, "Heat, 2010 and Inception") == ["Heat", "2010: The Year We Make Contact", "Inception"], \
        "a number listed on its own is still a title"
    assert titles(linker, "I loved Avengers: Infinity War (2018)") == ["Avengers: Infinity War - Part I"]


@pytest.mark.parametrize(("text", "expected"), [
    ("I want a scary movie for tonight", []),
    ("any goofy movie for the kids?", []),
    ("I loved Scary Movie", ["Scary Movie"]),
    ("scary movie (2000) was hilarious", ["Scary Movie"]),
    ('what about "a goofy movie"?', ["Goofy Movie, A"]),
])
def test_a_word_then_movie_needs_a_signal(text, expected):
    linker = TitleLinker(Catalogue([
        Movie(item_id=1, title="Scary Movie", year=2000, genres=["Comedy"]),
        Movie(item_id=2, title="Goofy Movie, A", year=1995, genres=["Animation"]),
    ]))
    assert titles(linker, text) == expected
