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
