"""Stop strings over streamed text: where the first one starts, and how much of the tail to hold back because
it may still grow into one. The transformers engine cuts the LLM's text with these; `StopFilter` cuts a
whole reply (the LLM's sentence and the grounded list after it), so a client's `stop` applies to everything
it is shown, as OpenAI's does.
"""

from __future__ import annotations

from collections.abc import Sequence


def first_stop(text: str, stops: Sequence[str]) -> int | None:
    """Index where the earliest stop string starts in `text`, or None."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest tail of `text` that is a proper prefix of a stop string (0 if none)."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:n]):
                longest = n
                break
    return longest


class StopFilter:
    """Feed streamed deltas; get back what may be shown: never a stop string or anything after it.

    `stopped` turns True at the first stop string; later deltas show nothing. `close()` returns the held-back
    tail once the stream has ended without one.
    """

    def __init__(self, stops: Sequence[str]):
        self.stops = tuple(stops)
        self.text = ""  # everything received
        self.emitted = 0  # characters of `text` already returned
        self.stopped = False

    def feed(self, delta: str) -> str:
        if self.stopped:
            return ""
        self.text += delta
        at = first_stop(self.text, self.stops)
        if at is not None:
            self.stopped = True
            end = at
        else:
            end = len(self.text) - held_back(self.text, self.stops)
        shown = self.text[self.emitted : end]
        self.emitted = max(self.emitted, end)
        return shown

    def close(self) -> str:
        if self.stopped:
            return ""
        rest = self.text[self.emitted :]
        self.emitted = len(self.text)
        return rest
