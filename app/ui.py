"""The Gradio chat page: a streaming chat beside cards for the current recommendations."""

from __future__ import annotations

import html
from collections.abc import Iterator
from typing import Any

import gradio as gr

from serving.api.protocol import ChatMessage
from serving.service import ChatService, ChatTurn

MAX_MESSAGE_CHARS = 2000
EXAMPLES = ["I loved Toy Story and Finding Nemo", "Something darker", "Not animated"]
CSS = """
.rec-cards {display: flex; flex-direction: column; gap: 10px;}
.rec-card {border: 1px solid var(--border-color-primary); border-radius: 10px; padding: 10px 12px;}
.rec-card h4 {margin: 0 0 4px 0;}
.rec-card .genres {opacity: .75; font-size: .9em;}
.rec-card .reason {margin-top: 4px;}
"""


def render_cards(turn: ChatTurn | None) -> str:
    """HTML cards for a turn's recommendations (titles escaped: they come from a data file)."""
    if turn is None or not turn.recommendations:
        return "<div class='rec-cards'><em>Recommendations appear here.</em></div>"
    cards = []
    for rec in turn.recommendations:
        year = f" ({rec.year})" if rec.year else ""
        cards.append(
            "<div class='rec-card'>"
            f"<h4>{html.escape(rec.title)}{year}</h4>"
            f"<div class='genres'>{html.escape(', '.join(rec.genres))}</div>"
            f"<div class='reason'>{html.escape(rec.reason)}</div>"
            "</div>"
        )
    return "<div class='rec-cards'>" + "".join(cards) + "</div>"


def build_ui(service: ChatService) -> gr.Blocks:
    """A Blocks page over an in-process ChatService; each browser tab keeps its own session id."""

    def respond(
        message: str, history: list[dict[str, Any]], session_id: str | None
    ) -> Iterator[tuple[list[dict[str, Any]], str, str | None, str]]:
        message = (message or "").strip()
        if not message:
            yield history, gr.skip(), session_id, ""
            return
        if len(message) > MAX_MESSAGE_CHARS:
            gr.Warning(f"Messages are limited to {MAX_MESSAGE_CHARS} characters; yours was cut.")
            message = message[:MAX_MESSAGE_CHARS]
        history = [*history, {"role": "user", "content": message}, {"role": "assistant", "content": ""}]
        yield history, gr.skip(), session_id, ""
        try:
            for event in service.chat_stream(session_id, [ChatMessage(role="user", content=message)]):
                if isinstance(event, ChatTurn):
                    history[-1] = {"role": "assistant", "content": event.reply}
                    yield history, render_cards(event), event.session_id, ""
                else:
                    history[-1] = {"role": "assistant", "content": history[-1]["content"] + event}
                    yield history, gr.skip(), session_id, ""
        except Exception as exc:  # noqa: BLE001 - show the person a message, keep the page alive
            history[-1] = {"role": "assistant", "content": f"Sorry, something went wrong: {exc}"}
            yield history, gr.skip(), session_id, ""

    def new_conversation() -> tuple[list[dict[str, Any]], str, None, str]:
        return [], render_cards(None), None, ""

    with gr.Blocks(title="ilmrec") as page:
        gr.Markdown("## ilmrec: tell me what you like, I'll find your next movie")
        session = gr.State(None)
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=320):
                chat = gr.Chatbot(label="Conversation", height=480, elem_id="chat")
                box = gr.Textbox(
                    placeholder="e.g. I loved Toy Story and Finding Nemo",
                    show_label=False,
                    max_lines=4,
                    elem_id="message",
                    info=f"Up to {MAX_MESSAGE_CHARS} characters.",
                )
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="send")
                    reset = gr.Button("New conversation", elem_id="new-conversation")
                gr.Examples(EXAMPLES, inputs=box)
            with gr.Column(scale=2, min_width=260):
                cards = gr.HTML(render_cards(None), elem_id="cards")
        outputs = [chat, cards, session, box]
        box.submit(respond, [box, chat, session], outputs, api_name="chat")
        send.click(respond, [box, chat, session], outputs, api_visibility="private")
        reset.click(new_conversation, None, outputs, api_name="new_conversation")
    return page
