"""The reply's opening clause: what the turn changed, in the user's voice."""

from __future__ import annotations

import pytest

from serving.dialogue import DialogueState
from serving.reply_opening import COLD_START, MORE_IDEAS, join_words, opening, wish_phrase


@pytest.fixture
def ids(ids_by_title):
    return ids_by_title


def test_movies_liked_this_turn_come_first_named_as_people_say_them(catalogue, ids):
    before = DialogueState(liked=[ids["Heat"]], mood="darker")
    after = before.model_copy(update={"liked": [ids["Heat"], ids["Matrix, The"], ids["Amelie (Fabuleux destin "
                                      "d'Amélie Poulain, Le)"], ids["Alien"]], "disliked": [ids["Up"]]})
    assert opening(before, after, catalogue) == "Since you liked The Matrix and Amelie,"


def test_movies_disliked_this_turn_then_a_changed_wish(catalogue, ids):
    liked = DialogueState(liked=[ids["Heat"]])
    one = liked.model_copy(update={"disliked": [ids["Shining, The"]]})
    assert opening(liked, one, catalogue) == "Since The Shining wasn't for you,"
    two = one.model_copy(update={"disliked": [ids["Shining, The"], ids["Alien"], ids["Up"]]})
    assert opening(liked, two, catalogue) == "Since The Shining and Alien weren't for you,"
    darker = liked.model_copy(update={"mood": "darker", "exclude_genres": ["Animation", "Children"]})
    assert opening(liked, darker, catalogue) == "For something darker with no animation or children's,"


def test_an_unchanged_wish_falls_back_to_the_last_two_liked_then_cold_start(catalogue, ids):
    state = DialogueState(liked=[ids["Heat"], ids["Memento"], ids["Godfather, The"]], mood="darker")
    assert opening(state, state, catalogue) == "Since you liked Memento and The Godfather,"
    assert opening(DialogueState(), DialogueState(), catalogue) == COLD_START
    neutral = DialogueState(neutral=[ids["Heat"]], seen=[ids["Heat"]])
    assert opening(DialogueState(), neutral, catalogue) == COLD_START
    cleared = DialogueState(turn=1, include_genres=["Comedy"])
    assert opening(cleared, DialogueState(turn=2), catalogue) == MORE_IDEAS, "a wish taken back leaves nothing"
    nineties = DialogueState(turn=1, year_min=1990, year_max=1999)
    thanks = nineties.model_copy(update={"turn": 2})
    assert opening(nineties, thanks, catalogue) == "For movies released 1990-1999,", "the wish still stands"


@pytest.mark.parametrize(
    ("wish", "phrase"),
    [
        ({}, ""),
        ({"mood": "lighter"}, "something lighter"),
        ({"include_genres": ["Comedy", "Sci-Fi"]}, "comedy and sci-fi movies"),
        ({"mood": "darker", "include_genres": ["Crime"], "only_genres": [["Crime"], ["Film-Noir"]]},
         "darker crime and film noir movies"),
        ({"exclude_genres": ["Horror"]}, "movies with no horror"),
        ({"year_min": 1990, "year_max": 1999}, "movies released 1990-1999"),
        ({"mood": "darker", "exclude_genres": ["IMAX"], "year_min": 2000},
         "something darker with no IMAX released 2000 or later"),
    ],
)
def test_wish_phrase(wish, phrase):
    assert wish_phrase(DialogueState(**wish)) == phrase


def test_join_words():
    assert [join_words(w) for w in (["a"], ["a", "b"], ["a", "b", "c"])] == ["a", "a and b", "a, b and c"]
    assert join_words(["a", "b"], "or") == "a or b"
