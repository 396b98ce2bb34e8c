"""Keeps the LLM's introductory sentence short and free of anything that looks like a movie list.

A small frozen LLM rambles: it starts lists, invents "Title (Year)" names or quotes titles that are not in
the catalogue. The grounded numbered list after the sentence names the movies, so the sentence needs none
of that. `SentenceGuard` filters the streamed text as it arrives:
- it ends after the first sentence terminator (. ! ?) followed by a space or the end of the stream;
- it stops *before* the first newline, quote, asterisk, bracket, colon or a digit that starts a list or a
  year, so no title-like span (`"Heat"`, `**Heat**`, `Heat (1995)`, `1. Heat`) is ever emitted;
- it stops at `max_chars`, at the last word boundary.
`done` says when the engine can be closed. What was emitted is always a prefix of the LLM's text.
"""

from __future__ import annotations

import re

CUT = re.compile(r"[\n\"“”*_()\[\]{}:#|<>]|\b\d")
"""The first of these ends the sentence before it."""
END = re.compile(r"[.!?](?=\s)")


class SentenceGuard:
    """Feed streamed deltas; get back what may be shown. See the module docstring."""

    def __init__(self, max_chars: int = 200):
        self.max_chars = max_chars
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
        if stop and stop.end() <= end:
            end, self.done = stop.end(), True
        if end > self.max_chars:
            space = self.text.rfind(" ", 0, self.max_chars)
            end, self.done = (space if space > 0 else self.max_chars), True
        if not self.done:
            while end > self.emitted and self.text[end - 1].isspace():
                end -= 1  # trailing space waits for the next word: the sentence may end here
            if self.text[end - 1 : end] in (".", "!", "?"):
                end -= 1  # a terminator is only an end once a space follows: hold it back
        shown = self.text[self.emitted : end]
        if self.done:
            shown = shown.rstrip()
        self.emitted = max(self.emitted, end)
        return shown

    def close(self) -> str:
        """The held-back rest once the stream has ended (a final terminator)."""
        if self.done:
            return ""
        self.done = True
        rest = self.text[self.emitted :].rstrip()
        self.emitted = len(self.text)
        return rest if len(self.text) <= self.max_chars else ""

    @property
    def shown(self) -> str:
        """Everything returned so far."""
        return self.text[: self.emitted].rstrip()
