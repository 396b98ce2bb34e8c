"""Keeps the LLM's introductory sentence short and free of anything that looks like a movie list.

A small frozen LLM rambles: it starts lists, invents "Title (Year)" names or quotes titles that are not in
the catalogue. The grounded numbered list after the sentence names the movies, so the sentence needs none
of that. `SentenceGuard` filters the streamed text as it arrives:
- it ends after the first sentence terminator (. ! ?) followed by a space or the end of the stream;
- it stops *before* the first newline, quote, asterisk, bracket, colon or a digit that starts a list or a
  year, so no title-like span (`"Heat"`, `**Heat**`, `Heat (1995)`, `1. Heat`) is ever emitted;
- it stops at `max_chars`, at the last word boundary;
- a sentence cut short by the rules above with fewer than `min_words` words is a fragment ("Genre", "Sure",
  "Here") and is dropped whole, so nothing is shown until `min_words` words have arrived or the sentence has
  ended on its own terminator ("Great taste!" is shown).
`done` says when the engine can be closed. What was emitted is always a prefix of the LLM's text.

With an `opening` (the clause the reply starts with, `serving.reply_opening`, already shown), the guard filters
the LLM's continuation of it: `max_chars` counts the opening too, and the first text shown starts with a space
and a small letter when its first word is a common sentence starter ("Here are" -> " here are").
"""

from __future__ import annotations

import re

CUT = re.compile(r"[\n\"“”*_()\[\]{}:#|<>]|\b\d")
"""The first of these ends the sentence before it."""
END = re.compile(r"[.!?](?=\s)")
STARTERS = frozenset(
    "a all an and both but check each enjoy for here hope how it its let let's more my our so some take the "
    "then there these they this try we what with you your".split()
)
"""First words of a continuation that lose their capital after the opening's comma (never "I" or a name)."""


class SentenceGuard:
    """Feed streamed deltas; get back what may be shown. See the module docstring."""

    def __init__(self, max_chars: int = 200, min_words: int = 4, opening: str = ""):
        self.max_chars = max(1, max_chars - len(opening) - 1) if opening else max_chars
        self.min_words, self.opening = min_words, opening
        self.text = ""  # everything received
        self.emitted = 0  # characters of `text` already returned
        self.done = False

    def feed(self, delta: str) -> str:
        """The newly showable text after `delta` (maybe empty); sets `done` once the sentence is over."""
        if self.done:
            return ""
        self.text += delta if self.text else delta.lstrip()
        end = len(self.text)
        cut = CUT.search(self.text, self.emitted)
        if cut:
            end, self.done = cut.start(), True
        stop = END.search(self.text)
        ended = bool(stop and stop.end() <= end)
        if ended:
            end, self.done = stop.end(), True
        if end > self.max_chars:
            space = self.text.rfind(" ", 0, self.max_chars)
            end, self.done, ended = (space if space > 0 else self.max_chars), True, False
        if not self.done:
            while end > self.emitted and self.text[end - 1].isspace():
                end -= 1  # trailing space waits for the next word: the sentence may end here
            if self.text[end - 1 : end] in (".", "!", "?"):
                end -= 1  # a terminator is only an end once a space follows: hold it back
        if not self.emitted and not ended and self._fragment(end):
            end = 0  # hold back (or, once done, drop) what may be a fragment
        shown = self.text[self.emitted : end]
        if self.done:
            shown = shown.rstrip()
        shown = self._joined(shown)
        self.emitted = max(self.emitted, end)
        return shown

    def close(self) -> str:
        """The held-back rest once the stream has ended (a final terminator)."""
        if self.done:
            return ""
        self.done = True
        rest = self.text[self.emitted :].rstrip()
        ended = rest.endswith((".", "!", "?"))
        if not self.emitted and not ended and self._fragment(len(rest)):
            return ""
        if len(self.text) > self.max_chars:
            return ""
        rest = self._joined(rest)
        self.emitted = len(self.text)
        return rest

    def _joined(self, shown: str) -> str:
        """The first text shown after an opening: a space, then the first word in small letters if a starter."""
        if not (self.opening and shown and not self.emitted):
            return shown
        first = shown.split(maxsplit=1)[0]
        if first.lower() in STARTERS and first[0].isupper():
            shown = shown[0].lower() + shown[1:]
        return " " + shown

    def _fragment(self, end: int) -> bool:
        """Whether text[:end] has fewer than `min_words` words (a complete word needs a space after it, or
        the sentence to be over)."""
        words = self.text[:end].split()
        complete = len(words) if self.done or self.text[end : end + 1].isspace() else len(words) - 1
        return complete < self.min_words

    @property
    def shown(self) -> str:
        """Everything returned so far."""
        return self.text[: self.emitted].rstrip()
