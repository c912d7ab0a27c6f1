"""An omni model behind the server: OpenAI input_audio content parts and `modalities: ["text", "audio"]` replies
(base64 wav) through the `openai` client, the refusals, and the web page attaching a clip and playing the reply."""

import base64
import io
import shutil
from pathlib import Path

import pytest
import soundfile
import torch

from minimind.config import omni_preset
from minimind.data.audio import wav_bytes
from minimind.infer import Engine, SamplingParams
from minimind.model.audio import batch_mels, log_mel
from minimind.model.codec import codec_log_mel
from minimind.model.omni import OmniModel
from minimind.tokenizer import load_tokenizer
from tests.conftest import make_model
from tests.omni.conftest import tone
from tests.serve.server import live_server

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def omni_engine():
    torch.manual_seed(0)
    text, audio = omni_preset("tiny-o")
    model = OmniModel(text.replace(initializer_range=0.2), audio)
    model.codec.fit([codec_log_mel(tone(0.5, hz, seed=k)) for k, hz in enumerate((300, 900, 2500))], iterations=4)
    with torch.no_grad():
        for p in model.audio_projector.parameters():
            p.normal_(0, 0.5)
    return Engine(model.eval(), load_tokenizer())


@pytest.fixture(scope="module")
def server(omni_engine):
    with live_server(omni_engine, name="tiny-o") as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)


def clip(hz=440.0) -> str:
    return base64.b64encode(wav_bytes(tone(0.6, hz))).decode()


def ask(client, *parts, **kwargs):
    return client.chat.completions.create(model="tiny-o", temperature=0, max_tokens=8,
                                          messages=[{"role": "user", "content": list(parts)}], **kwargs)


def test_an_input_audio_part_gets_the_engines_answer_about_that_clip(client, omni_engine):
    replies, last = [], []
    for hz in (300.0, 3000.0):
        part = {"type": "input_audio", "input_audio": {"data": clip(hz), "format": "wav"}}
        replies.append(ask(client, part, {"type": "text", "text": "Transcribe."}).choices[0].message.content)
        mel = log_mel(tone(0.6, hz))
        prompt = omni_engine.chat_prompt([{"role": "user", "content": "<audio>\nTranscribe."}], audios=[mel])
        direct = omni_engine.generate([prompt], SamplingParams(temperature=0, max_new_tokens=8), audios=[[mel]])
        assert replies[-1] == direct[0][0].text
        with torch.no_grad():
            last.append(omni_engine.model(torch.tensor([prompt]), *batch_mels([mel])).logits[0, -1])
    assert not torch.allclose(last[0], last[1])         # what comes next depends on what was heard


def test_a_spoken_reply_carries_a_wav_and_its_transcript(client):
    response = ask(client, {"type": "text", "text": "Say: hello"}, modalities=["text", "audio"],
                   audio={"voice": "default", "format": "wav"})
    message = response.choices[0].message
    assert message.content is None and isinstance(message.audio.transcript, str)
    wave, rate = soundfile.read(io.BytesIO(base64.b64decode(message.audio.data)))
    assert rate == 16000 and wave.ndim == 1
    stream = ask(client, {"type": "text", "text": "Say: hello"}, modalities=["text", "audio"],
                 audio={"voice": "default", "format": "wav"}, stream=True)
    deltas = [c.choices[0].delta for c in stream if c.choices]
    audio = [d.audio for d in deltas if d.audio is not None]
    assert "".join(a.transcript or "" for a in audio) == message.audio.transcript
    assert "".join(a.data or "" for a in audio) == message.audio.data            # the same seeded reply


@pytest.mark.parametrize("part, needle", [
    ({"type": "input_audio", "input_audio": {"data": "%%%", "format": "wav"}}, "not valid base64"),
    ({"type": "input_audio", "input_audio": {"data": base64.b64encode(b"nonsense").decode(), "format": "wav"}},
     "not a readable audio file"),
])
def test_bad_clips_get_a_400_naming_the_part(client, part, needle):
    with pytest.raises(openai.BadRequestError, match=needle) as e:
        ask(client, part)
    assert "messages[0].content[0].input_audio.data" in str(e.value)


def test_a_text_model_refuses_audio_in_and_out():
    engine = Engine(make_model("tiny"), load_tokenizer())
    with live_server(engine) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="hears no audio"):
            client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": [
                {"type": "input_audio", "input_audio": {"data": clip(), "format": "wav"}}]}])
        with pytest.raises(openai.BadRequestError, match="does not speak"):
            client.chat.completions.create(model="tiny", modalities=["text", "audio"],
                                           messages=[{"role": "user", "content": "hi"}])


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no Chromium at /usr/bin/chromium")
def test_the_web_page_sends_a_clip_and_plays_the_spoken_reply(server, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    path = tmp_path / "question.wav"
    path.write_bytes(base64.b64decode(clip()))
    flags = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=flags)
        page = browser.new_page(viewport={"width": 1100, "height": 750})
        page.goto(server + "/")
        page.wait_for_function("document.getElementById('model').textContent.startsWith('tiny-o')")
        page.fill("#max_tokens", "8")
        page.check("#speak")
        page.set_input_files("#audiofile", str(path))
        page.wait_for_selector("#attached audio")
        page.click("#send")
        page.wait_for_selector(".msg.assistant .stats:has-text('tokens/s')", timeout=30_000)
        assert page.locator(".msg.user audio").count() == 1              # the clip is in the conversation
        assert "error" not in page.locator(".msg.assistant .stats").inner_text()
        src = page.locator(".msg.assistant audio").get_attribute("src")   # the reply plays from a wav
        assert src.startswith("data:audio/wav;base64,")
        browser.close()
