"""The chat page's handlers and cards, without a browser (tests/app/test_browser.py drives the real page)."""

from __future__ import annotations

import re

import gradio as gr
import pytest

from app.commands import build_service
from app.ui import TROUBLE, ChatPage, message_text, render_cards
from serving.api.protocol import Recommendation
from serving.dialogue import DialogueState
from serving.errors import EngineUnavailableError


@pytest.fixture(scope="module")
def page(tiny_settings, tiny_artefacts) -> ChatPage:
    return ChatPage(build_service(tiny_settings, tiny_artefacts))


def reasons(cards: str) -> list[str]:
    return re.findall(r"<p class='rec-reason'>(.*?)</p>", cards)


def final(events) -> tuple:
    *_, last = list(events)
    return last


def test_cards_escape_data_and_show_verdicts():
    recs = [
        Recommendation(item_id=7, title="<b>Heat</b>", year=1995, genres=["Crime"], reason="It's a \"heist\""),
        Recommendation(item_id=8, title="Up", year=None, genres=[], reason="Popular"),
        Recommendation(item_id=9, title="Alien", year=1979, genres=["Horror"], reason="Dark"),
    ]
    cards = render_cards(recs, DialogueState(turn=3, liked=[7], disliked=[8]))
    assert "<b>Heat</b>" not in cards and "&lt;b&gt;Heat&lt;/b&gt;" in cards and "&quot;heist&quot;" in cards
    assert "data-turns='3'" in cards and cards.count("<article") == 3
    assert "class='rec-card is-liked' data-item='7'" in cards and "class='rec-card is-disliked' data-item='8'" in cards
    assert "class='rec-card' data-item='9'" in cards
    assert cards.count("data-kind='not_interested'") == 3 and "(1979)" in cards and "Up (" not in cards
    empty = render_cards([])
    assert "data-turns='0'" in empty and "rec-empty" in empty


@pytest.mark.parametrize(
    ("content", "text"),
    [("plain", "plain"), ([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], "ab"), (None, "")],
)
def test_message_text_reads_strings_and_typed_parts(content, text):
    assert message_text(content) == text


def test_a_turn_streams_then_ends_with_cards_and_the_session(page):
    events = list(page.respond("I loved Toy Story", [], ""))
    chat, cards, session_id, _, shown = events[-1]
    stored = page.service.session(session_id)
    assert chat == [{"role": "user", "content": "I loved Toy Story"},
                    {"role": "assistant", "content": stored.turns[-1].reply}]
    assert all(f"data-item='{i}'" in cards for i in stored.turns[-1].recommended)
    assert events[0][3] == "" and all(isinstance(e[3], type(gr.skip())) for e in events[1:]), (
        "only the first update clears the textbox: text typed while the reply streams stays")
    assert [r["item_id"] for r in shown] == stored.turns[-1].recommended
    assert len(events) >= 3, "the empty bubble, at least one delta, then the finished turn"


def test_an_expired_session_is_rebuilt_from_the_conversation_on_screen(page):
    shown = [{"role": "user", "content": [{"type": "text", "text": "I loved Toy Story"}]},
             {"role": "assistant", "content": [{"type": "text", "text": "Try Up (2009)."}]}]
    chat, _, session_id, _, _ = final(page.respond("not animated", shown, "expired-session"))
    state = page.service.session(session_id).state
    toy_story = next(m.item_id for m in page.service.catalogue if m.title == "Toy Story")
    assert session_id != "expired-session" and state.liked == [toy_story]
    assert state.exclude_genres == ["Animation"] and state.turn == 2
    assert [m["content"] for m in chat[:3]] == ["I loved Toy Story", "Try Up (2009).", "not animated"]


class _Failing:
    def __init__(self, error: Exception):
        self.error = error

    def chat_stream(self, *args, **kwargs):
        raise self.error


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (EngineUnavailableError("the LLM server at http://127.0.0.1:8001 is not answering"),
         "Sorry, I couldn't answer that: the LLM server at http://127.0.0.1:8001 is not answering"),
        (RuntimeError("CUDA out of memory at 0x7f"), TROUBLE),
    ],
)
def test_failures_become_a_clear_message_without_internals(error, shown):
    chat, *rest = final(ChatPage(_Failing(error)).respond("hi", [], "abc"))
    assert chat[-1] == {"role": "assistant", "content": shown}
    assert all(isinstance(value, type(gr.skip())) for value in rest), "cards, session and textbox stay"


def test_feedback_redraws_the_same_cards_and_reload_restores_them(page):
    *_, (_, before, session_id, _, shown) = page.respond("Something funny", [], "")
    item = shown[0]["item_id"]
    cards = page.feedback(session_id, shown, gr.EventData(None, {"item_id": item, "kind": "like"}))
    assert f"class='rec-card is-liked' data-item='{item}'" in cards
    assert reasons(cards) == reasons(before), "a verdict does not rewrite the reasons on screen"
    assert page.service.session(session_id).state.liked == [item]
    malformed = page.feedback(session_id, shown, gr.EventData(None, {"item_id": item, "kind": "love"}))
    assert isinstance(malformed, type(gr.skip()))
    chat, restored, same, restored_shown = page.restore(session_id)
    assert same == session_id and [m["role"] for m in chat] == ["user", "assistant"]
    assert [r["item_id"] for r in restored_shown] == [r["item_id"] for r in shown]
    assert f"class='rec-card is-liked' data-item='{item}'" in restored
    assert page.restore("no-such-session") == ([], render_cards([]), "", [])
    assert page.restore("") == ([], render_cards([]), "", [])
