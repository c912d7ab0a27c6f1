"""A diffusion model behind the server: the `openai` client gets the sampler's answer, streamed block by block with
each denoising step's canvas; what the sampler cannot do is a 400; the web page animates the denoising."""

import shutil
from pathlib import Path

import pytest

from minimind.infer import DiffusionEngine, DiffusionParams, SamplingParams
from minimind.tokenizer import load_tokenizer
from tests.conftest import make_model
from tests.serve.server import live_server

openai = pytest.importorskip("openai")
MESSAGES = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def engine():
    return DiffusionEngine(make_model(objective="diffusion"), load_tokenizer(),
                           DiffusionParams(block_length=8, steps=4))


@pytest.fixture(scope="module")
def server(engine):
    with live_server(engine, name="tiny-dlm") as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)


def test_the_reply_is_the_samplers_and_streams_block_by_block(client, engine):
    expected, parsed = engine.chat(MESSAGES, SamplingParams(max_new_tokens=20, temperature=0))[0]
    reply = client.chat.completions.create(model="tiny-dlm", messages=MESSAGES, temperature=0, max_tokens=20)
    assert reply.choices[0].message.content == parsed.content
    assert reply.usage.completion_tokens == len(expected.token_ids)
    chunks = list(client.chat.completions.create(model="tiny-dlm", messages=MESSAGES, temperature=0, max_tokens=20,
                                                 stream=True, stream_options={"include_usage": True}))
    canvases = [c.choices[0].model_extra.get("canvas") for c in chunks if c.choices]
    assert any(c and "░" in c for c in canvases)                        # the steps of a block, masks and all
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == len(expected.token_ids)
    assert client.models.list().data[0].model_extra["objective"] == "diffusion"


def test_what_the_sampler_cannot_do_is_a_400(client):
    with pytest.raises(openai.BadRequestError, match="log-probabilities"):
        client.chat.completions.create(model="tiny-dlm", messages=MESSAGES, logprobs=True)
    with pytest.raises(openai.BadRequestError, match="penalties"):
        client.chat.completions.create(model="tiny-dlm", messages=MESSAGES, presence_penalty=0.5)


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no Chromium at /usr/bin/chromium")
def test_the_web_page_animates_the_denoising(server):
    playwright = pytest.importorskip("playwright.sync_api")
    flags = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=flags)
        page = browser.new_page(viewport={"width": 1100, "height": 750})
        page.goto(server + "/")
        page.wait_for_function("document.getElementById('model').textContent.includes('diffusion')")
        page.evaluate("""() => { window.drafts = [];      // every text the draft line held, record by record
            new MutationObserver(records => records.forEach(r => {
                if (r.target.classList && r.target.classList.contains('draft'))
                  r.addedNodes.forEach(n => window.drafts.push(n.textContent)); }))
              .observe(document.getElementById('log'), {subtree: true, childList: true}); }""")
        page.fill("#max_tokens", "16")
        page.fill("#temperature", "0")                  # greedy: the reply the first test checks
        page.fill("#input", "Hello there")
        page.click("#send")
        page.wait_for_selector(".msg.assistant .stats:has-text('tokens/s')", timeout=30_000)
        drafts = page.evaluate("window.drafts")
        stats = page.locator(".msg.assistant .stats").inner_text()
        browser.close()
    assert any("░" in d for d in drafts)                                # masks were shown, then filled in
    assert "error" not in stats and not stats.startswith("0 tokens")
