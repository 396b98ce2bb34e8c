"""`ilmrec chat`: a bad message is reported in one line and the conversation goes on."""

from __future__ import annotations

from app.terminal_chat import chat_loop
from serving.service import ChatTurn


class _Console:
    def __init__(self, lines: list[str]):
        self.lines, self.printed = iter(lines), []

    def input(self, prompt: str) -> str:
        return next(self.lines)

    def print(self, *parts, **kwargs) -> None:
        self.printed.append(" ".join(str(p) for p in parts))


class _Service:
    def __init__(self):
        self.messages, self.closed = [], False

    def close(self):
        self.closed = True

    def chat_stream(self, session_id, messages):
        self.messages.append(messages[-1].content)
        yield "Try these:\n1. Heat (1995)"
        yield ChatTurn.model_construct(session_id="s1")


def test_a_too_long_message_is_one_error_line_then_the_chat_continues(monkeypatch):
    console = _Console(["x" * 5000, "I loved Heat", ""])
    monkeypatch.setattr("app.terminal_chat.Console", lambda: console)
    service = _Service()
    assert chat_loop(service) == 0
    errors = [line for line in console.printed if "error:" in line]
    assert len(errors) == 1 and "content:" in errors[0] and "4000 characters" in errors[0]
    assert service.messages == ["I loved Heat"]
    assert sum("Heat (1995)" in line for line in console.printed) == 1, "the picks are listed once"
    assert service.closed, "the engine is closed on the way out (a cut-short reply's worker may still run)"
