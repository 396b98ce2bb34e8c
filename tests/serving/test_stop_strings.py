"""Stop strings over streamed text: the first match, the held-back tail, and a filter over deltas."""

from __future__ import annotations

import pytest

from serving.stop_strings import StopFilter, first_stop, held_back


def test_first_stop_is_the_earliest_of_all():
    assert first_stop("a cat sat on a mat", ["mat", "sat"]) == 6
    assert first_stop("a cat", ["dog"]) is None and first_stop("a cat", []) is None


def test_held_back_is_the_longest_tail_that_may_become_a_stop():
    assert held_back("the end of", ["of the", "f"]) == 2  # "of" starts "of the"; "f" alone would be a match
    assert held_back("abc", ["cd", "bcd"]) == 2
    assert held_back("abc", ["x"]) == 0 and held_back("", ["ab"]) == 0


@pytest.mark.parametrize("split", [1, 2, 3, 5])
def test_the_filter_never_shows_a_stop_string_split_over_deltas(split):
    text = "Great picks!\n1. Heat: crime END more"
    deltas = [text[i : i + split] for i in range(0, len(text), split)]
    cut = StopFilter(["END", "zzz"])
    shown = "".join(cut.feed(d) for d in deltas) + cut.close()
    assert shown == "Great picks!\n1. Heat: crime " and cut.stopped
    assert cut.feed("more") == "" and cut.close() == ""


def test_a_held_back_prefix_that_never_completes_is_shown_at_close():
    cut = StopFilter(["END"])
    assert cut.feed("the E") == "the " and cut.feed("N") == ""
    assert cut.close() == "EN" and not cut.stopped
