"""The web chat page in headless Chromium (Debian's, driven by Playwright): send a message, watch the reply
stream in, hover a token to see its probability and alternatives. The screenshot is kept in test-artifacts/."""

import shutil
from pathlib import Path

import pytest

from minimind.infer import Engine
from minimind.tokenizer import load_tokenizer
from tests.conftest import make_model
from tests.serve.server import live_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="no Chromium at /usr/bin/chromium (apt-get install chromium; `make test` "
                                       "does this where apt is available)")


def test_chat_page_streams_a_reply_and_shows_token_probabilities():
    engine = Engine(make_model("tiny"), load_tokenizer())
    flags = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync"]
    with live_server(engine) as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=flags)
        page = browser.new_page(viewport={"width": 1100, "height": 750})
        page.goto(url + "/")
        page.wait_for_function("document.getElementById('model').textContent.startsWith('tiny')")
        page.fill("#max_tokens", "24")
        page.fill("#input", "Hello, who are you?")
        page.click("#send")
        page.wait_for_selector(".msg.assistant .stats:has-text('tokens/s')", timeout=30_000)
        assert page.locator(".msg.user").inner_text().endswith("Hello, who are you?")
        tokens = page.locator(".msg.assistant .tok")
        assert 1 <= tokens.count() <= 24
        assert page.locator(".msg.assistant .stats").inner_text().startswith(f"{tokens.count()} tokens")
        tokens.nth(0).hover()
        tip = page.locator("#tip")
        tip.wait_for(state="visible")
        text = tip.inner_text()
        assert "p = " in text and text.count("%") == 6            # the token and its top-5 alternatives
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "web-chat.png"))
        browser.close()
    assert (ARTIFACTS / "web-chat.png").stat().st_size > 10_000
