"""Screenshot the chat UI of a running ilmrec into docs/screenshot.png.

    make run                                      # in one terminal: train (or load) and serve on :8000
    .venv/bin/python scripts/screenshot.py        # in another: chat two turns, save docs/screenshot.png

Drives Debian's chromium (`apt-get install chromium`) through Playwright; never `playwright install`.
Every request that does not go to the app is blocked, so the page is shown as it works offline.
`tests/app/test_browser.py` uses the same launcher and helpers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import BrowserContext, Page, Playwright, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
TURN_TIMEOUT_MS = 120_000
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "screenshot.png"


def launch(playwright: Playwright):
    """Headless Debian chromium; FileNotFoundError naming the package when it is missing."""
    if not CHROMIUM.is_file():
        raise FileNotFoundError(f"{CHROMIUM} not found: apt-get install chromium")
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=list(CHROMIUM_ARGS))


def block_external(context: BrowserContext, base_url: str) -> list[str]:
    """Abort every request to another host than the app's; the returned list fills with their URLs."""
    app_host = urlsplit(base_url).netloc
    blocked: list[str] = []

    def route(request_route) -> None:
        url = request_route.request.url
        if urlsplit(url).scheme in ("data", "blob") or urlsplit(url).netloc == app_host:
            request_route.continue_()
        else:
            blocked.append(url)
            request_route.abort()

    context.route("**/*", route)
    return blocked


def turns_shown(page: Page) -> int:
    """User messages the conversation on screen has read (the cards' `data-turns`)."""
    return int(page.get_attribute("#cards .rec-cards", "data-turns"))


def send(page: Page, text: str, timeout_ms: int = TURN_TIMEOUT_MS) -> None:
    """Type `text`, press Send, and wait until the turn is complete (reply and cards)."""
    before = turns_shown(page)
    page.fill("#message textarea", text)
    page.click("#send")
    page.wait_for_selector(f"#cards .rec-cards[data-turns='{before + 1}']", timeout=timeout_ms)


def open_ui(page: Page, base_url: str, query: str = "") -> None:
    """Open the chat page and wait until it is ready (a restored session is on screen)."""
    page.goto(f"{base_url.rstrip('/')}/ui/{query}")
    page.wait_for_selector("#message textarea")
    page.wait_for_selector("#cards .rec-cards")


def screenshot(base_url: str, out: Path, messages: list[str]) -> list[str]:
    """Chat `messages` at desktop width, thumbs-up the first pick, save a PNG; return blocked URLs."""
    with sync_playwright() as playwright:
        browser = launch(playwright)
        context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
        blocked = block_external(context, base_url)
        page = context.new_page()
        open_ui(page, base_url)
        for text in messages:
            send(page, text)
        first = page.locator("#cards .rec-card").first
        first.locator("button[data-kind='like']").click()
        first.locator(".rec-status").wait_for()
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=True)
        browser.close()
    return blocked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="base URL of a running ilmrec")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="PNG to write (default docs/screenshot.png)")
    parser.add_argument("--message", action="append", dest="messages",
                        help="a user message (repeatable); default: two example turns")
    args = parser.parse_args(argv)
    messages = args.messages or ["I loved Toy Story and Finding Nemo", "Something a bit darker, not animated"]
    blocked = screenshot(args.url, args.out, messages)
    print(f"saved {args.out}" + (f"; blocked {len(blocked)} external requests" if blocked else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
