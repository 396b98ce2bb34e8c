"""SentenceGuard: one short sentence, cut before anything that could name a movie."""

from __future__ import annotations

import pytest

from serving.reply_text import SentenceGuard


def stream(deltas: list[str], max_chars: int = 200) -> tuple[str, bool, int]:
    """(shown text, whether it ended early, how many deltas were consumed)."""
    guard, parts, used = SentenceGuard(max_chars), [], 0
    for delta in deltas:
        used += 1
        parts.append(guard.feed(delta))
        if guard.done:
            return "".join(parts), True, used
    parts.append(guard.close())
    return "".join(parts), False, used


@pytest.mark.parametrize(
    ("deltas", "shown"),
    [
        (["Here are ", "some picks", " for you.", " Enjoy them all!"], "Here are some picks for you."),
        (["Great ", "taste!"], "Great taste!"),
        (["You will surely love ", '"Heat"', " for sure."], "You will surely love"),
        (["You will love ", '"Heat"', " for sure."], ""),  # a fragment of 3 words is dropped
        (["Try **The ", "Matrix**"], ""),
        (["Watch Zorgon (1999) ", "tonight."], ""),
        (["Sure", "\n1. Heat"], ""),
        (["Genre", ": Comedy"], ""),
        (["Top 3 movies", " here."], ""),
        (["Sure"], ""),
        (["e.g", ". this works"], "e.g."),
        (["Se7en fans will like these."], "Se7en fans will like these."),
    ],
)
def test_cuts(deltas, shown):
    assert stream(deltas)[0] == shown


def test_stops_early_and_emits_a_prefix():
    text, early, used = stream(["One.", " Two.", " Three."])
    assert (text, early, used) == ("One.", True, 2)
    long = "word " * 100
    text, early, _ = stream([long], max_chars=23)
    assert early and text == "word word word word" and long.startswith(text)


def test_nothing_after_done():
    guard = SentenceGuard()
    assert guard.feed("Hi there. ") == "Hi there." and guard.done
    assert guard.feed("More text") == "" and guard.close() == "" and guard.shown == "Hi there."


def test_nothing_is_shown_until_the_sentence_cannot_be_a_fragment():
    guard = SentenceGuard(min_words=4)
    assert [guard.feed(d) for d in ["These ", "are ", "great "]] == ["", "", ""] and not guard.done
    assert guard.feed("picks ") == "These are great picks" and guard.feed("tonight. ") == " tonight."
    short = SentenceGuard(min_words=4)
    assert short.feed("Enjoy") == "" and short.close() == ""  # ended without a terminator: a fragment


def test_a_continuation_of_an_opening_joins_it_mid_sentence():
    guard = SentenceGuard(opening="Since you liked Heat,")
    shown = [guard.feed(d) for d in [" Here", " are", " some", " darker", " picks.", " Enjoy!"]]
    assert "".join(shown) == " here are some darker picks." and guard.shown == "Here are some darker picks."
    keeps = SentenceGuard(opening="Since you liked Heat,")
    assert "".join(keeps.feed(d) for d in ["I think ", "you will ", "love these. "]) == " I think you will love these."
    named = SentenceGuard(opening="For something darker,")
    assert "".join(named.feed(d) for d in ["Nolan fans ", "will love ", "these. "]) == " Nolan fans will love these."


def test_an_opening_counts_towards_max_chars_and_a_cut_short_continuation_is_dropped():
    opening = "Since you liked Heat and Memento,"
    guard = SentenceGuard(max_chars=len(opening) + 20, opening=opening)
    shown = "".join(guard.feed(d) for d in ["here are a few ", "great movies for ", "tonight "])
    assert guard.done and shown == " here are a few" and len(opening + shown) <= len(opening) + 20
    short = SentenceGuard(opening=opening)
    assert short.feed("here are: ") == "" and short.done and short.shown == ""
