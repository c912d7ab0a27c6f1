"""A vision model behind the server: OpenAI image_url content parts (data: URLs) through the `openai` client, the
refusals (remote URLs, broken images, images for a text model), and the web page attaching an image."""

import base64
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from minimind.config import vision_preset
from minimind.infer import Engine, SamplingParams
from minimind.model.vlm import VisionLanguageModel
from minimind.tokenizer import load_tokenizer
from tests.conftest import make_model
from tests.serve.server import live_server

openai = pytest.importorskip("openai")


def data_url(colour=(200, 30, 30), size=40) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def vision_engine():
    torch.manual_seed(0)
    text, vision = vision_preset("tiny-v")
    model = VisionLanguageModel(text.replace(initializer_range=0.2), vision).eval()
    with torch.no_grad():
        for p in model.multi_modal_projector.parameters():
            p.normal_(0, 0.5)
    return Engine(model, load_tokenizer())


@pytest.fixture(scope="module")
def server(vision_engine):
    with live_server(vision_engine, name="tiny-v") as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)


def ask(client, *parts, **kwargs):
    return client.chat.completions.create(model="tiny-v", temperature=0, max_tokens=8,
                                          messages=[{"role": "user", "content": list(parts)}], **kwargs)


def test_an_image_part_gets_the_engines_answer_about_that_image(client, vision_engine):
    from minimind.data.images import from_data_url, load_array

    red, blue = data_url((200, 30, 30)), data_url((30, 30, 200))
    text = {"type": "text", "text": "What colour is it?"}
    replies = [ask(client, {"type": "image_url", "image_url": {"url": url}}, text).choices[0].message.content
               for url in (red, blue)]
    expected = []
    for url in (red, blue):
        image = load_array(from_data_url(url), vision_engine.model.vision.image_size)
        completion, parsed = vision_engine.chat([{"role": "user", "content": "<image>\nWhat colour is it?"}],
                                                SamplingParams(max_new_tokens=8, temperature=0), images=[image])[0]
        expected.append(parsed.content)
    assert replies == expected and replies[0] != replies[1]   # the image reaches the model


def test_streaming_with_two_images(client):
    stream = ask(client, {"type": "image_url", "image_url": {"url": data_url()}},
                 {"type": "image_url", "image_url": {"url": data_url((0, 255, 0))}},
                 {"type": "text", "text": "same?"}, stream=True)
    chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("url, needle", [
    ("https://example.com/cat.png", "only data: URLs are accepted (scheme 'https')"),
    ("data:image/png;base64,bm90IGFuIGltYWdl", "not a readable image"),
    ("data:image/png;base64,@@@", "not valid base64"),
])
def test_bad_images_get_a_400_naming_the_part(client, url, needle):
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, {"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": url}})
    message = caught.value.body["message"]
    assert needle in message and message.startswith("messages[0].content[1].image_url")


def test_a_text_model_refuses_images():
    engine = Engine(make_model("tiny"), load_tokenizer())
    with live_server(engine) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="reads no images"):
            client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": data_url()}}, {"type": "text", "text": "hi"}]}])


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no Chromium at /usr/bin/chromium")
def test_the_web_page_attaches_an_image(server, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    from PIL import Image

    picture = tmp_path / "red.png"
    Image.fromarray(np.full((48, 48, 3), (200, 30, 30), dtype=np.uint8)).save(picture)
    flags = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=flags)
        page = browser.new_page(viewport={"width": 1100, "height": 750})
        page.goto(server + "/")
        page.wait_for_function("document.getElementById('model').textContent.startsWith('tiny-v')")
        page.fill("#max_tokens", "8")
        page.set_input_files("#image", str(picture))
        page.wait_for_selector("#attached img")
        page.fill("#input", "What colour is it?")
        page.click("#send")
        page.wait_for_selector(".msg.assistant .stats:has-text('tokens/s')", timeout=30_000)
        assert page.locator(".msg.user img").count() == 1            # the picture is shown in the conversation
        assert page.locator("#attached img").count() == 0            # and the composer is cleared
        assert "error" not in page.locator(".msg.assistant .stats").inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "web-chat-image.png"))
        browser.close()
