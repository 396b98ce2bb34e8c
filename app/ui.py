"""The Gradio chat page: a streaming chat beside recommendation cards with feedback buttons.

One conversation per tab. Its session id lives in the `#session-link` component, whose script mirrors it
into the address bar (`/ui/?session=<id>`): reloading the page, or opening that link, restores the
conversation from the session store. Card buttons fire one custom `feedback` event with the movie's
catalogue id and the verdict, which `ChatService.feedback` writes into the dialogue state; the same cards
are then redrawn with the verdicts the store now holds, which is what the next turn will use.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import gradio as gr
from pydantic import BaseModel, ValidationError

from serving.api.protocol import ChatMessage, Recommendation
from serving.dialogue import DialogueState, FeedbackKind
from serving.errors import ServingError, UnknownSessionError
from serving.service import ChatService, ChatTurn

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 2000
EXAMPLES = ["I loved Toy Story and Finding Nemo", "Something darker", "Not animated", "Only movies from the 90s"]
EMPTY_CARDS = "Tell me a few movies you love, and my picks appear here."
TROUBLE = "Sorry, something went wrong on my side. Please try again in a moment."
THUMB = (  # an outline-free thumb drawn here, so no emoji font is needed
    "<svg viewBox='0 0 24 24' width='16' height='16' aria-hidden='true'{flip}><path fill='currentColor' "
    "d='M2 10h4v11H2zM8 10l4-8c1.7 0 3 1.3 3 3v4h5.5c1.1 0 2 1 1.8 2.1l-1.6 8.2c-.2.9-1 1.7-2 1.7H8z'/></svg>"
)
BUTTONS: tuple[tuple[FeedbackKind, str, str], ...] = (
    # kind, label (HTML), what it tells the recommender (tooltip and accessible name)
    ("like", THUMB.format(flip=""), "Liked it: more like this"),
    ("dislike", THUMB.format(flip=" style='transform: rotate(180deg)'"), "Disliked it: fewer like this"),
    ("seen", "Seen it", "Already watched: don't suggest it again"),
    ("not_interested", "Not interested", "Not for me: fewer like this"),
)
STATUS = {
    "liked": "Liked: the next picks lean towards it",
    "disliked": "Noted: the next picks steer away from it",
    "seen": "Marked as seen: it won't come back",
}
THEME = gr.themes.Default(primary_hue="indigo", neutral_hue="slate", radius_size="lg")
CSS = """
.gradio-container {max-width: 1180px !important; margin: 0 auto;}
#title h2 {margin: 0;}
#title p {margin: 2px 0 0 0; opacity: .75;}
.rec-cards {display: flex; flex-direction: column; gap: 10px;}
.rec-empty {opacity: .7; font-style: italic; padding: 8px 2px;}
.rec-card {border: 1px solid var(--border-color-primary); border-radius: 12px; padding: 10px 12px;
           background: var(--background-fill-secondary);}
.rec-card.is-liked {border-color: var(--color-accent);}
.rec-card.is-disliked, .rec-card.is-seen {opacity: .72;}
.rec-title {font-weight: 600; font-size: 1.02em; margin: 0;}
.rec-year {opacity: .7; font-weight: 400;}
.rec-genres {display: flex; flex-wrap: wrap; gap: 4px; margin: 5px 0;}
.rec-genres span {font-size: .78em; padding: 1px 8px; border-radius: 999px;
                  background: var(--background-fill-primary); border: 1px solid var(--border-color-primary);}
.rec-reason {margin: 4px 0 8px 0; font-size: .92em;}
.rec-actions {display: flex; flex-wrap: wrap; gap: 6px;}
.rec-actions button {display: inline-flex; align-items: center; font-size: .85em; padding: 3px 10px; border-radius: 8px; cursor: pointer;
                     border: 1px solid var(--border-color-primary); background: var(--background-fill-primary);}
.rec-actions button:hover {border-color: var(--color-accent);}
.rec-actions button[aria-pressed="true"] {background: var(--color-accent-soft); border-color: var(--color-accent);}
.rec-status {margin-top: 6px; font-size: .85em; opacity: .85;}
.session-link {font-size: .85em; opacity: .8;}
@media (max-width: 720px) {
  #chat {height: 56vh !important;}
  .rec-actions button {padding: 6px 12px;}
}
"""

# Event delegation on the cards' root survives every re-render of the cards' HTML.
CARDS_JS = """
element.addEventListener('click', (event) => {
  const button = event.target.closest('button[data-kind]');
  if (!button) return;
  trigger('feedback', {item_id: Number(button.dataset.item), kind: button.dataset.kind});
});
"""
# Keep ?session=<id> in the address bar equal to the conversation shown (cleared by "New conversation").
SESSION_JS = """
watch('value', () => {
  const url = new URL(window.location.href);
  if (props.value) { url.searchParams.set('session', props.value); } else { url.searchParams.delete('session'); }
  window.history.replaceState(null, '', url);
});
"""
SESSION_TEMPLATE = (
    "${value ? `<a class='session-link' href='?session=${value}'>Link to this conversation</a>` : ''}"
)
READ_SESSION_FROM_URL = "() => new URLSearchParams(window.location.search).get('session') || ''"


class FeedbackEvent(BaseModel):
    """What a card button sends."""

    item_id: int
    kind: FeedbackKind


def render_cards(recommendations: Sequence[Recommendation], state: DialogueState | None = None) -> str:
    """HTML cards with feedback buttons; titles, genres and reasons are escaped (they come from data files).

    The root's `data-turns` is the number of user messages read (`state.turn`): it changes once a turn is
    complete, which is what the browser tests and `scripts/screenshot.py` wait for.
    """
    state = state or DialogueState()
    root = f"<div class='rec-cards' data-turns='{state.turn}'>"
    if not recommendations:
        return f"{root}<div class='rec-empty'>{EMPTY_CARDS}</div></div>"
    return root + "".join(_card(rec, _verdict(rec.item_id, state)) for rec in recommendations) + "</div>"


def _verdict(item_id: int, state: DialogueState) -> str | None:
    if item_id in state.liked:
        return "liked"
    if item_id in state.disliked:
        return "disliked"
    return "seen" if item_id in state.seen else None


def _card(rec: Recommendation, verdict: str | None) -> str:
    title = html.escape(rec.title)
    year = f" <span class='rec-year'>({rec.year})</span>" if rec.year else ""
    genres = "".join(f"<span>{html.escape(g)}</span>" for g in rec.genres)
    pressed = {"liked": "like", "seen": "seen"}.get(verdict or "")  # "disliked" covers two buttons: say it below
    buttons = "".join(
        f"<button type='button' data-kind='{kind}' data-item='{rec.item_id}' title='{html.escape(tip)}' "
        f"aria-label='{html.escape(tip)}: {title}' aria-pressed='{str(kind == pressed).lower()}'>{label}</button>"
        for kind, label, tip in BUTTONS
    )
    status = f"<div class='rec-status'>{STATUS[verdict]}</div>" if verdict else ""
    return (
        f"<article class='rec-card{f' is-{verdict}' if verdict else ''}' data-item='{rec.item_id}'>"
        f"<h4 class='rec-title'>{title}{year}</h4><div class='rec-genres'>{genres}</div>"
        f"<p class='rec-reason'>{html.escape(rec.reason)}</p><div class='rec-actions'>{buttons}</div>{status}"
        "</article>"
    )


def message_text(content: Any) -> str:
    """The text of a Chatbot message, whether a string or Gradio 6's typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or "")
    if isinstance(content, list):
        return "".join(message_text(part) for part in content)
    return ""


class ChatPage:
    """The event handlers of the page, over an in-process ChatService (sessions without an owner)."""

    def __init__(self, service: ChatService):
        self.service = service

    def respond(
        self, message: str, history: list[dict[str, Any]], session_id: str
    ) -> Iterator[tuple[Any, Any, Any, Any, Any]]:
        """Stream one turn: (chat, cards, session id, textbox, cards shown) updates.

        Only the first update clears the textbox, so what the user types while the reply streams is kept.
        """
        skip = gr.skip()
        message = (message or "").strip()
        if not message:
            yield skip, skip, skip, "", skip
            return
        if len(message) > MAX_MESSAGE_CHARS:
            gr.Warning(f"Messages are limited to {MAX_MESSAGE_CHARS} characters; yours was cut.")
            message = message[:MAX_MESSAGE_CHARS]
        earlier = [{"role": m["role"], "content": message_text(m["content"])} for m in history or []]
        chat = [*earlier, {"role": "user", "content": message}, {"role": "assistant", "content": ""}]
        yield chat, skip, skip, "", skip
        try:
            for event in self._stream(session_id or None, earlier, message):
                if isinstance(event, ChatTurn):
                    chat[-1] = {"role": "assistant", "content": event.reply}
                    shown = [r.model_dump() for r in event.recommendations]
                    yield chat, render_cards(event.recommendations, event.state), event.session_id, skip, shown
                else:
                    chat[-1] = {"role": "assistant", "content": chat[-1]["content"] + event}
                    yield chat, skip, skip, skip, skip
        except ServingError as exc:
            chat[-1] = {"role": "assistant", "content": f"Sorry, I couldn't answer that: {exc}"}
            yield chat, skip, skip, skip, skip
        except Exception:  # the page stays usable; the traceback goes to the log only
            log.exception("chat turn failed")
            chat[-1] = {"role": "assistant", "content": TROUBLE}
            yield chat, skip, skip, skip, skip

    def _stream(self, session_id: str | None, earlier: list[dict[str, str]], message: str):
        """The turn's event stream; an expired session is rebuilt from the conversation on screen."""
        try:
            return self.service.chat_stream(session_id, [ChatMessage(role="user", content=message)])
        except UnknownSessionError:
            if session_id is None:
                raise
            gr.Info("This conversation had expired on the server; I picked it up again from what is on screen.")
            messages = [ChatMessage(role=m["role"], content=m["content"]) for m in earlier if m["content"]]
            return self.service.chat_stream(None, [*messages, ChatMessage(role="user", content=message)])

    def feedback(self, session_id: str, shown: list[dict[str, Any]], event: gr.EventData) -> Any:
        """A card button was clicked: record the verdict, then redraw the same cards with the new verdicts."""
        try:
            verdict = FeedbackEvent(item_id=getattr(event, "item_id", None), kind=getattr(event, "kind", None))
        except ValidationError:
            log.warning("ignored a malformed feedback event: %r", getattr(event, "_data", None))
            return gr.skip()
        if not session_id:
            gr.Warning("Start a conversation first.")
            return gr.skip()
        try:
            state = self.service.feedback(session_id, verdict.item_id, verdict.kind)
        except ServingError as exc:
            gr.Warning(f"Couldn't record that: {exc}")
            return gr.skip()
        return render_cards([Recommendation.model_validate(r) for r in shown or []], state)

    def restore(self, session_id: str) -> tuple[Any, Any, Any, Any]:
        """On page load: (chat, cards, session id, cards shown) of the conversation in the URL, or an empty page."""
        empty = ([], render_cards([]), "", [])
        if not session_id:
            return empty
        try:
            stored = self.service.session(session_id)
        except ServingError:
            gr.Warning("That conversation has expired or does not exist; let's start a new one.")
            return empty
        chat = [
            message
            for turn in stored.turns
            for message in ({"role": "user", "content": turn.user}, {"role": "assistant", "content": turn.reply})
        ]
        shown = self.service.describe(stored.turns[-1].recommended if stored.turns else [], stored.state)
        return chat, render_cards(shown, stored.state), session_id, [r.model_dump() for r in shown]


def build_ui(service: ChatService) -> gr.Blocks:
    """The page over an in-process ChatService. Public API endpoint: `chat(message, history, session_id)`."""
    page = ChatPage(service)
    with gr.Blocks(title="ilmrec") as blocks:
        gr.Markdown(
            "## ilmrec\nTell me movies you like (or don't), and what you're in the mood for.", elem_id="title"
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=320):
                chat = gr.Chatbot(
                    label="Conversation", height=520, elem_id="chat", buttons=["copy"],
                    placeholder="Try: *I loved Toy Story and Finding Nemo*",
                )
                box = gr.Textbox(
                    placeholder="e.g. I loved Toy Story and Finding Nemo",
                    show_label=False,
                    max_lines=4,
                    max_length=MAX_MESSAGE_CHARS,
                    elem_id="message",
                    info=f"Up to {MAX_MESSAGE_CHARS} characters.",
                )
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="send", scale=2)
                    reset = gr.Button("New conversation", elem_id="new-conversation", scale=1)
                session = gr.HTML("", html_template=SESSION_TEMPLATE, js_on_load=SESSION_JS, elem_id="session-link")
                gr.Examples(EXAMPLES, inputs=box, label="Try")
            with gr.Column(scale=2, min_width=280):
                gr.Markdown("### Picks for you")
                cards = gr.HTML(render_cards([]), js_on_load=CARDS_JS, elem_id="cards")

        shown = gr.State([])  # the cards on screen, as Recommendation dicts: feedback redraws them unchanged
        outputs = [chat, cards, session, box, shown]
        # One listener for Enter and Send: "always_last" runs a message sent while a turn is still finishing
        # after it, where the default ("once") would drop it silently.
        gr.on([box.submit, send.click], page.respond, [box, chat, session], outputs, api_name="chat",
              trigger_mode="always_last")
        reset.click(lambda: ([], render_cards([]), "", "", []), None, outputs, api_visibility="private")
        cards.feedback(page.feedback, [session, shown], [cards], api_visibility="private")
        blocks.load(page.restore, [session], [chat, cards, session, shown], js=READ_SESSION_FROM_URL,
                    api_visibility="private")
    return blocks
