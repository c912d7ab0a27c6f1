import json
import shutil

import numpy as np
import pytest

from minimind.data.audio import SAMPLE_RATE, write_wav


def tone(seconds: float = 0.6, hz: float = 440.0, seed: int = 0) -> np.ndarray:
    """A sine with a little noise: a clip whose spectrum is known."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    noise = np.random.default_rng(seed).normal(0, 0.01, t.shape)
    return (0.4 * np.sin(2 * np.pi * hz * t) + noise).astype(np.float32)


@pytest.fixture
def speech_files(tmp_path):
    """A tiny speech data set of tones: recognition (tone → its name), text-to-speech (a name → its tone)."""
    names = {"low": 300.0, "mid": 800.0, "high": 2000.0}
    records = []
    for k, (name, hz) in enumerate(names.items()):
        write_wav(tmp_path / f"q{k}.wav", tone(0.5 + 0.1 * k, hz, seed=k))
        write_wav(tmp_path / f"a{k}.wav", tone(0.4, hz, seed=10 + k))
        records.append({"conversations": [{"role": "user", "content": "<audio>\nTranscribe."},
                                          {"role": "assistant", "content": name}], "audios": [f"q{k}.wav"],
                        "type": "asr", "lang": "en"})
        records.append({"conversations": [{"role": "user", "content": f"Say: {name}"},
                                          {"role": "assistant", "content": name}], "audios": [],
                        "answer_audio": f"a{k}.wav", "type": "tts", "lang": "en"})
    path = tmp_path / "speech.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (`make speech` installs it where apt can)")
