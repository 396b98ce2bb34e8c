import pytest

from ilm_model.item_text import describe, parse_description
from retrieval.catalogue import Movie


def test_describe_title_year_genres():
    movie = Movie(item_id=1, title="Toy Story", year=1995, genres=("Adventure", "Animation", "Children"))
    assert describe(movie) == "Toy Story (1995). Genres: Adventure, Animation, Children"


def test_describe_without_year_or_genres():
    assert describe(Movie(item_id=2, title="Untitled", genres=("(no genres listed)",))) == "Untitled"
    assert describe(Movie(item_id=3, title="Heat", year=1995)) == "Heat (1995)"


def test_parse_inverts_describe():
    movie = Movie(item_id=1, title="Lion King, The", year=1994, genres=("Animation", "Musical"))
    assert parse_description(describe(movie)) == ("Lion King, The (1994)", ("Animation", "Musical"))
    assert parse_description("  Heat (1995)  ") == ("Heat (1995)", ())


@pytest.mark.parametrize(
    ("generated", "parsed"),
    [
        ("Title: Corpse Bride (2005)\nGenres: Drama, Comedy,", ("Corpse Bride (2005)", ("Drama", "Comedy"))),
        ("The Night Circus (1998) - Genres: Fantasy / Romance", ("The Night Circus (1998)", ("Fantasy", "Romance"))),
        ('**"Heat (1995)"**. genres: Action and Crime.', ("Heat (1995)", ("Action", "Crime"))),
        ("Heat (1995) is a crime film by Michael Mann.", ("Heat (1995)", ())),
        ("The Monsters (1983) (Genre: Horror)\n\nGenre", ("The Monsters (1983)", ("Horror",))),
        ("This movie is a classic thriller", ("This movie is a classic thriller", ())),
        ("", ("", ())),
    ],
)
def test_parse_tolerates_small_llm_layouts(generated, parsed):
    assert parse_description(generated) == parsed
