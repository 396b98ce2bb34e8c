"""The chat page in a real browser (Debian chromium via Playwright) against the app on a loopback port.

Skipped only when /usr/bin/chromium is absent (`apt-get install chromium`; .ci/run installs it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from scripts.screenshot import CHROMIUM, block_external, launch, open_ui, send, turns_shown
from serving.dialogue import DialogueState, update_state
from serving.service import ChatService

pytestmark = pytest.mark.skipif(
    not CHROMIUM.is_file(), reason=f"{CHROMIUM} not found: apt-get install chromium (.ci/run installs it)"
)

ARTEFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
"""Where the screenshot of a served turn is kept after the run (git-ignored)."""
PACE_S = 0.05
"""Pause after each streamed event, so the browser paints every delta and the test can see the stream."""

RECORD_BOT_TEXT = """() => {
  window.botTexts = [];
  new MutationObserver(() => {
    const bots = document.querySelectorAll('#chat [data-testid="bot"]');
    if (bots.length) window.botTexts.push(bots[bots.length - 1].innerText);
  }).observe(document.querySelector('#chat'), {subtree: true, childList: true, characterData: true});
}"""


@dataclass
class Tab:
    page: object  # playwright.sync_api.Page
    blocked: list[str]  # requests to other hosts, aborted


@pytest.fixture(scope="module")
def app(live_app) -> Iterator:
    """The live app, its service pacing its streamed events."""
    service = live_app.service
    original = service.chat_stream

    def paced(*args, **kwargs):
        stream = original(*args, **kwargs)

        def events():
            for event in stream:
                yield event
                time.sleep(PACE_S)

        return events()

    service.chat_stream = paced
    yield live_app
    del service.chat_stream


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


@pytest.fixture()
def tab(browser, app) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    blocked = block_external(context, app.url)
    yield Tab(context.new_page(), blocked)
    context.close()


def session_of(page) -> str | None:
    return parse_qs(urlsplit(page.url).query).get("session", [None])[0]


def card_ids(page) -> list[int]:
    return [int(i) for i in page.locator("#cards .rec-card").evaluate_all("cs => cs.map(c => c.dataset.item)")]


def bot_texts(page) -> list[str]:
    return page.locator('#chat [data-testid="bot"]').all_inner_texts()


def next_picks(service: ChatService, state: DialogueState, text: str) -> list[int]:
    """What the next turn must recommend from `state` after reading `text`."""
    read = update_state(state, text, service.linker, service.catalogue)
    return service.rank(read)[: service.config.n_recommendations]


def test_a_turn_streams_its_reply_and_shows_catalogue_cards(app, tab):
    page = tab.page
    open_ui(page, app.url)
    assert turns_shown(page) == 0 and page.get_attribute("#message textarea", "maxlength") == "2000"
    page.evaluate(RECORD_BOT_TEXT)
    send(page, "Something funny")

    stored = app.service.session(session_of(page))
    catalogue = app.service.catalogue
    shown = stored.turns[-1].recommended
    assert card_ids(page) == shown and len(shown) == app.service.config.n_recommendations
    titles = page.locator("#cards .rec-title").all_inner_texts()
    assert titles == [catalogue[i].display_title for i in shown]
    reply = bot_texts(page)[-1]
    assert all(catalogue[i].display_title in reply for i in shown)
    partial = [t for t in page.evaluate("window.botTexts") if t.strip() and catalogue[shown[0]].title not in t]
    assert partial, "the reply's sentence was on screen before the list of picks arrived"

    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTEFACTS / "ui.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot: {shot}")
    assert tab.blocked == [], "the page must work without the network"


def test_card_buttons_steer_the_next_turn(app, tab):
    page = tab.page
    open_ui(page, app.url)
    send(page, "Something funny")
    shown, reasons = card_ids(page), page.locator("#cards .rec-reason").all_inner_texts()
    for index, kind, mark in ((0, "like", "is-liked"), (1, "not_interested", "is-disliked"), (2, "seen", "is-seen")):
        page.click(f"#cards .rec-card[data-item='{shown[index]}'] button[data-kind='{kind}']")
        page.wait_for_selector(f"#cards .rec-card.{mark}[data-item='{shown[index]}']")
    page.click(f"#cards .rec-card[data-item='{shown[3]}'] button[data-kind='dislike']")
    page.wait_for_selector(f"#cards .rec-card.is-disliked[data-item='{shown[3]}']")

    assert page.locator("#cards .rec-reason").all_inner_texts() == reasons, "verdicts don't rewrite reasons"
    session_id = session_of(page)
    state = app.service.session(session_id).state
    assert (state.liked, state.disliked, state.seen) == ([shown[0]], [shown[1], shown[3]], [shown[2]])
    send(page, "more like that")
    picks = card_ids(page)
    assert picks == next_picks(app.service, state, "more like that")
    assert not set(picks) & set(shown)
    liked_title = app.service.catalogue[shown[0]].display_title
    assert any(liked_title in reason for reason in page.locator("#cards .rec-reason").all_inner_texts())
    assert session_of(page) == session_id


def test_reload_restores_and_new_conversation_clears(app, tab, browser):
    page = tab.page
    open_ui(page, app.url)
    send(page, "I loved Toy Story and Finding Nemo")
    send(page, "not animated")
    first = card_ids(page)[0]
    page.click(f"#cards .rec-card[data-item='{first}'] button[data-kind='like']")
    page.wait_for_selector(f"#cards .rec-card.is-liked[data-item='{first}']")
    session_id, replies, cards = session_of(page), bot_texts(page), card_ids(page)

    page.reload()
    page.wait_for_selector("#cards .rec-cards[data-turns='2']")
    assert session_of(page) == session_id and bot_texts(page) == replies and card_ids(page) == cards
    assert page.locator('#chat [data-testid="user"]').all_inner_texts() == [
        "I loved Toy Story and Finding Nemo", "not animated"
    ]
    assert page.locator(f"#cards .rec-card.is-liked[data-item='{first}']").count() == 1

    elsewhere = browser.new_context(viewport={"width": 1280, "height": 900})
    other = elsewhere.new_page()
    open_ui(other, app.url, f"?session={session_id}")
    other.wait_for_selector("#cards .rec-cards[data-turns='2']")
    assert bot_texts(other) == replies
    elsewhere.close()

    page.click("#new-conversation")
    page.wait_for_selector("#cards .rec-cards[data-turns='0']")
    assert bot_texts(page) == [] and session_of(page) is None
    send(page, "I loved Heat")
    assert session_of(page) not in (None, session_id)
    assert app.service.session(session_id).state.liked[-1] == first, "the old session is left as it was"


def test_a_message_sent_while_the_reply_streams_is_kept_and_answered_next(app, tab):
    page = tab.page
    open_ui(page, app.url)
    page.fill("#message textarea", "I loved Toy Story and Finding Nemo")
    page.click("#send")
    page.wait_for_function("""() => {
      const bots = document.querySelectorAll('#chat [data-testid="bot"]');
      return bots.length && bots[bots.length - 1].innerText.trim().length > 0;
    }""")
    assert turns_shown(page) == 0, "the first reply is still streaming"
    page.fill("#message textarea", "not animated")
    page.click("#send")
    page.wait_for_selector("#cards .rec-cards[data-turns='2']", timeout=120_000)
    assert page.locator('#chat [data-testid="user"]').all_inner_texts() == [
        "I loved Toy Story and Finding Nemo", "not animated"
    ]
    assert app.service.session(session_of(page)).state.exclude_genres == ["Animation"]


def test_an_unknown_session_link_starts_afresh(app, tab):
    page = tab.page
    open_ui(page, app.url, "?session=no-such-session")
    page.get_by_text("expired or does not exist").wait_for()
    assert bot_texts(page) == [] and turns_shown(page) == 0


def test_phone_width_stacks_the_cards_under_the_chat(app, browser):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    open_ui(page, app.url)
    send(page, "I loved Memento")
    chat, cards = page.locator("#chat").bounding_box(), page.locator("#cards").bounding_box()
    assert cards["y"] >= chat["y"] + chat["height"], "the cards go below the chat"
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "no sideways scrolling"
    context.close()
