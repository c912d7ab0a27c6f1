"""Generated speech whose words are known: the default audio data (no hub needed), in English and Chinese, spoken
by Debian's `espeak-ng` in many voices, speeds and pitches, with noise added.

    asr        "<audio>\\nTranscribe." → the words said: 1–4 of WORDS_EN (digits and short words) or WORDS_ZH
    arithmetic "<audio>" (a spoken question: "what is three plus four" / "三加四等于几") → the answer in words
    tts        "Say: seven cat" / "说：七猫" → the same words, and their sound in the output voice (answer_audio)
    s2s        a spoken arithmetic question → the answer in words and in sound

Held out by construction: voices (the VARIANTS_HELD_OUT voice variants, and the English accent ACCENT_HELD_OUT,
never speak in training), arithmetic questions (a fifth of the (a, op, b) triples are never asked in training; half
the held-out questions are those, half are asked ones in the new voices: "seen_question" says which) and sentences
(word sequences are drawn fresh; a held-out record's sequence is not a training one). The answers are
always spoken in one voice (OUTPUT_VOICES): MiniMind-O's default speaker.

Files (`build_speech`): clips/{train,heldout}/*.flac (16 kHz), speech.jsonl and speech_heldout.jsonl (the
`speech` record format, each with its "type", "lang" and the "transcripts" of its clips), manifest.json.
"""

from __future__ import annotations

import io
import json
import random
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from minimind.data.audio import SAMPLE_RATE, resample
from minimind.errors import MiniMindError

DIGITS_EN = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
NUMBERS_EN = DIGITS_EN + ["ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
                          "eighteen"]
WORDS_EN = DIGITS_EN + ["cat", "dog", "sun", "box", "hat", "car", "red", "blue", "green", "yes", "no", "water",
                        "apple", "tree", "fish", "bird", "book", "hello", "house", "music"]
DIGITS_ZH = list("零一二三四五六七八九")
NUMBERS_ZH = DIGITS_ZH + ["十", "十一", "十二", "十三", "十四", "十五", "十六", "十七", "十八"]
WORDS_ZH = DIGITS_ZH + ["猫", "狗", "太阳", "书", "水", "红色", "蓝色", "苹果", "你好", "老师"]
OPS = {"plus": ("plus", "加"), "minus": ("minus", "减")}

ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan"]
ACCENT_HELD_OUT = "en-gb-x-gbcwmd"
VARIANTS = ["", "m1", "m2", "m3", "m4", "m5", "f1", "f2", "f4", "klatt", "klatt2", "croak", "whisper"]
VARIANTS_HELD_OUT = ["m7", "f3", "klatt3"]
OUTPUT_VOICES = {"en": "en-us", "zh": "cmn"}
LANGS = {"en": "English", "zh": "Chinese"}


def espeak() -> str:
    """The espeak-ng executable, or a MiniMindError saying how to install it."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise MiniMindError("espeak-ng is not installed: the speech data is spoken by it (`apt-get install "
                            "espeak-ng`, or `make speech`, which does so where apt can)")
    return path


def synthesise(text: str, voice: str, speed: int = 160, pitch: int = 50) -> np.ndarray:
    """espeak-ng's rendering of `text` → float32 [samples] at 16 kHz."""
    import soundfile

    result = subprocess.run([espeak(), "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
                            capture_output=True, check=False, timeout=60)
    if result.returncode != 0 or not result.stdout:
        raise MiniMindError(f"espeak-ng failed on {text!r} with voice {voice}: {result.stderr.decode()[:200]}")
    wave, rate = soundfile.read(io.BytesIO(result.stdout), dtype="float32")
    return resample(wave, rate, SAMPLE_RATE)


def with_noise(wave: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White noise at `snr_db` below the clip's power, and a random gain in [0.5, 1]."""
    power = float(np.mean(wave ** 2)) or 1e-8
    noisy = wave + rng.normal(0, np.sqrt(power / 10 ** (snr_db / 10)), wave.shape).astype(np.float32)
    return noisy * rng.uniform(0.5, 1.0) / max(1.0, float(np.abs(noisy).max()))


def arithmetic(held_out: bool, rng: random.Random) -> tuple[int, str, int]:
    """An (a, op, b) with a, b in 0–9 and a non-negative answer; a fifth of the triples (by a fixed hash) are the
    held-out ones."""
    while True:
        a, op, b = rng.randrange(10), rng.choice(list(OPS)), rng.randrange(10)
        if op == "minus" and b > a:
            continue
        if ((a * 7 + b * 3 + (op == "minus") * 5) % 5 == 0) == held_out:
            return a, op, b


def question(a: int, op: str, b: int, lang: str) -> str:
    if lang == "en":
        return f"what is {DIGITS_EN[a]} {OPS[op][0]} {DIGITS_EN[b]}"
    return f"{DIGITS_ZH[a]}{OPS[op][1]}{DIGITS_ZH[b]}等于几"


def answer_words(a: int, op: str, b: int, lang: str) -> str:
    value = a + b if op == "plus" else a - b
    return (NUMBERS_EN if lang == "en" else NUMBERS_ZH)[value]


def words(lang: str, rng: random.Random) -> str:
    chosen = [rng.choice(WORDS_EN if lang == "en" else WORDS_ZH) for _ in range(rng.randint(1, 4))]
    return " ".join(chosen) if lang == "en" else "".join(chosen)


def voice(lang: str, held_out: bool, rng: random.Random) -> str:
    variant = rng.choice(VARIANTS_HELD_OUT if held_out else VARIANTS)
    if lang == "zh":
        base = "cmn"
    else:
        base = ACCENT_HELD_OUT if held_out and rng.random() < 0.5 else rng.choice(ACCENTS)
    return base + (f"+{variant}" if variant else "")


def plan(counts: dict[str, int], held_out: bool, seed: int, said: set[str] | None = None) -> list[dict]:
    """The records to speak: per type and language, `counts[type]` items (two thirds English), each with the
    clips it needs as (text, voice, speed, pitch, snr) specs. `said`: the word sequences of training, which a
    training plan adds to and a held-out plan avoids."""
    rng = random.Random(seed)
    items, trained = [], said if said is not None else set()
    for kind, total in counts.items():
        for i in range(total):
            lang = "en" if i % 3 else "zh"

            def say(text: str, lang: str = lang) -> dict:         # a training voice, speed, pitch and noise
                return {"text": text, "voice": voice(lang, held_out, rng), "speed": rng.randint(120, 210),
                        "pitch": rng.randint(20, 80), "snr": rng.uniform(10, 40)}

            def out(text: str, lang: str = lang) -> dict:         # the output voice, clean
                return {"text": text, "voice": OUTPUT_VOICES[lang], "speed": 160, "pitch": 50, "snr": None}
            if kind in ("arithmetic", "s2s"):
                unseen = held_out and i % 2 == 0       # held out: half never-asked questions, half asked ones
                a, op, b = arithmetic(unseen, rng)
                text, reply = question(a, op, b, lang), answer_words(a, op, b, lang)
                item = {"user": "<audio>", "clips": [say(text)], "reply": reply, "question": text,
                        "seen_question": not unseen}
                if kind == "s2s":
                    item["answer_clip"] = out(reply)
            else:
                text = words(lang, rng)
                while held_out and text in trained:
                    text = words(lang, rng)
                if not held_out:
                    trained.add(text)
                if kind == "asr":
                    item = {"user": "<audio>\nTranscribe.", "clips": [say(text)], "reply": text}
                else:
                    item = {"user": ("Say: " if lang == "en" else "说：") + text, "clips": [], "reply": text,
                            "answer_clip": out(text)}
            items.append(item | {"type": kind, "lang": lang})
    return items


def render(job: tuple[Path, dict, int]) -> float:
    """Speak one clip spec into its FLAC file (noise drawn from the job's seed); returns its seconds."""
    import soundfile

    path, spec, seed = job
    wave = synthesise(spec["text"], spec["voice"], spec["speed"], spec["pitch"])
    if spec["snr"] is not None:
        wave = with_noise(wave, spec["snr"], np.random.default_rng(seed))
    soundfile.write(path, wave, SAMPLE_RATE, format="FLAC")
    return len(wave) / SAMPLE_RATE


def build_speech(out: str | Path, counts: dict[str, int] | None = None, heldout: dict[str, int] | None = None,
                 seed: int = 0, workers: int = 4) -> dict:
    """Write the default speech data under `out` (module docstring): `counts` training records per type (default
    asr 1800, arithmetic 1500, tts 1200, s2s 600) and `heldout` held-out ones. Returns the manifest."""
    counts = counts or {"asr": 1800, "arithmetic": 1500, "tts": 1200, "s2s": 600}
    heldout = heldout or {"asr": 150, "arithmetic": 150, "tts": 90, "s2s": 60}
    espeak()
    out = Path(out)
    manifest = {"sample_rate": SAMPLE_RATE, "voices_held_out": VARIANTS_HELD_OUT, "accent_held_out": ACCENT_HELD_OUT,
                "output_voices": OUTPUT_VOICES, "splits": {}}
    said = set()
    for split, wanted, held in (("train", counts, False), ("heldout", heldout, True)):
        folder = out / "clips" / split
        folder.mkdir(parents=True, exist_ok=True)
        items = plan(wanted, held, seed + 1000 * held, said)
        specs = [(f"clips/{split}/{i:06d}_{k}.flac", spec) for i, item in enumerate(items)
                 for k, spec in enumerate(item["clips"] + ([item["answer_clip"]] if "answer_clip" in item else []))]
        noise = np.random.default_rng(seed + 7 + held)
        jobs = [(out / name, spec, int(noise.integers(2**31))) for name, spec in specs]
        with ThreadPoolExecutor(workers) as pool:
            seconds = list(pool.map(render, jobs))
        names = iter(name for name, _ in specs)
        records = []
        for item in items:
            record = {"conversations": [{"role": "user", "content": item["user"]},
                                        {"role": "assistant", "content": item["reply"]}],
                      "audios": [next(names) for _ in item["clips"]], "type": item["type"], "lang": item["lang"]}
            if item["clips"]:
                record["transcripts"] = [clip["text"] for clip in item["clips"]]
            if "answer_clip" in item:
                record["answer_audio"] = next(names)
            if "seen_question" in item and split == "heldout":
                record["seen_question"] = item["seen_question"]
            if split == "heldout":
                record["voice"] = item["clips"][0]["voice"] if item["clips"] else OUTPUT_VOICES[item["lang"]]
            records.append(record)
        name = "speech.jsonl" if split == "train" else "speech_heldout.jsonl"
        with open(out / name, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        manifest["splits"][split] = {"records": len(records), "clips": len(specs),
                                     "hours": round(sum(seconds) / 3600, 3), "types": wanted}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest
