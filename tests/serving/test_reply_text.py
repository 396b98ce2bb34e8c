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
        (["You will love ", '"Heat"', " for sure."], "You will love"),
        (["Try **The ", "Matrix**"], "Try"),
        (["Watch Zorgon (1999) ", "tonight."], "Watch Zorgon"),
        (["Sure", "\n1. Heat"], "Sure"),
        (["Here:", " Heat"], "Here"),
        (["Top 3 movies", " here."], "Top"),
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
