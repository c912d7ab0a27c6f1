"""Measuring an omni model on held-out speech (`minimind eval --task speech`, and the omni job's report).

    recognition    word error rate (English) and character error rate (Chinese) of "<audio> Transcribe."
    arithmetic     exact-match accuracy of the answers to spoken questions in held-out voices: questions asked in
                   training, and questions never asked
    speech out     intelligibility: the character error rate our own recogniser gets on the model's speech
                   for held-out sentences (tts) and spoken answers (s2s)

Beside each figure its baselines: an empty transcript (error 1.0), the most frequent training transcript or answer
(what guessing earns), and for speech out the recogniser's error on espeak's own audio of the same text (the
ceiling: what our ears miss) and on that audio through the codec and Griffin-Lim (what the units lose).

Error rate = Levenshtein distance / reference length, over words (English) or characters (Chinese; spaces
dropped), summed over the set (edits / reference units).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import torch

from minimind.data.audio import read_audio, write_wav
from minimind.infer.engine import Engine
from minimind.infer.omni import speak
from minimind.infer.sampling import SamplingParams
from minimind.model.audio import log_mel
from minimind.model.codec import codec_log_mel

TRANSCRIBE = "<audio>\nTranscribe."


def edits(reference: list, hypothesis: list) -> int:
    """Levenshtein distance: the fewest insertions, deletions and substitutions turning one list into the other."""
    row = list(range(len(hypothesis) + 1))
    for i, r in enumerate(reference, 1):
        diagonal, row[0] = row[0], i
        for j, h in enumerate(hypothesis, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (r != h))
    return row[-1]


def units(text: str, lang: str) -> list[str]:
    """What an error rate counts: English words (lower-cased, punctuation dropped), or Chinese characters."""
    if lang == "zh":
        return [c for c in text if not c.isspace() and c not in "，。？！,.?!"]
    return "".join(c.lower() if c.isalnum() or c.isspace() else " " for c in text).split()


def error_rate(pairs: list[tuple[str, str, str]]) -> float:
    """(reference, hypothesis, lang) triples → Σ edits / Σ reference units."""
    total = sum(len(units(r, lang)) for r, _, lang in pairs)
    return sum(edits(units(r, lang), units(h, lang)) for r, h, lang in pairs) / max(total, 1)


def replies(engine: Engine, user: str, clips: list[torch.Tensor], max_new_tokens: int = 32,
            batch: int = 32) -> list[str]:
    """The greedy reply to `user` (one `<audio>` marker) for each clip (log-mel), in batches."""
    params = SamplingParams(temperature=0, max_new_tokens=max_new_tokens)
    out = []
    for s in range(0, len(clips), batch):
        group = clips[s:s + batch]
        prompts = [engine.chat_prompt([{"role": "user", "content": user}], audios=[m]) for m in group]
        out += [c[0].text.strip() for c in engine.generate(prompts, params, audios=[[m] for m in group])]
    return out


def recognise(engine: Engine, waves: list, batch: int = 32) -> list[str]:
    """Transcripts of 16 kHz waveforms by the model itself."""
    return replies(engine, TRANSCRIBE, [log_mel(w, engine.model.audio.n_mels) for w in waves], batch=batch)


def read_heldout(path: str | Path) -> list[dict]:
    path = Path(path)
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for r in records:
        r["base"] = path.parent
    return records


def trivial(train: str | Path | None, kind: str) -> dict[str, str]:
    """The most frequent training reply of each language for records of `kind` (what guessing earns)."""
    if train is None:
        return {}
    counts: dict[str, Counter] = {}
    for r in read_heldout(train):
        if r.get("type") == kind:
            counts.setdefault(r["lang"], Counter())[r["conversations"][-1]["content"]] += 1
    return {lang: c.most_common(1)[0][0] for lang, c in counts.items()}


def evaluate_speech(model, tokenizer, heldout: str | Path, train: str | Path | None = None,
                    samples_dir: str | Path | None = None, samples: int = 4, limit: int | None = None) -> dict:
    """The held-out speech records of `heldout` (data/default/speech.py's layout) → the figures of the module
    docstring, per language; `samples_dir` receives a few of the model's spoken replies as wav files."""
    engine = Engine(model, tokenizer)
    records = read_heldout(heldout)
    by_type = {}
    for r in records:
        by_type.setdefault(r["type"], []).append(r)
    if limit:
        by_type = {k: v[:limit] for k, v in by_type.items()}
    result, shown = {}, []

    def clip(r):
        return read_audio(r["base"] / r["audios"][0])

    asr = by_type.get("asr", [])
    if asr:
        heard = recognise(engine, [clip(r) for r in asr])
        guess = trivial(train, "asr")
        result["recognition"] = _per_lang(asr, heard, guess)
        shown += [("recognition", r, h) for r, h in list(zip(asr, heard, strict=True))[:samples]]
    arithmetic = by_type.get("arithmetic", []) + by_type.get("s2s", [])
    if arithmetic:
        answers = replies(engine, "<audio>", [log_mel(clip(r)) for r in arithmetic])
        guess = trivial(train, "arithmetic")
        result["arithmetic"] = {}
        groups = {"seen questions": True, "unseen questions": False}
        for lang in sorted({r["lang"] for r in arithmetic}):
            for name, seen in groups.items():
                rows = [(r, a) for r, a in zip(arithmetic, answers, strict=True)
                        if r["lang"] == lang and r.get("seen_question", False) == seen]
                if not rows:
                    continue
                right = sum(a == r["conversations"][-1]["content"] for r, a in rows)
                chance = sum(guess.get(lang) == r["conversations"][-1]["content"] for r, _ in rows)
                result["arithmetic"][f"{lang}, {name}"] = {"n": len(rows), "accuracy": right / len(rows),
                                                           "most_frequent_answer": chance / len(rows)}
        shown += [("arithmetic", r, a) for r, a in list(zip(arithmetic, answers, strict=True))[:samples]]
    talk = by_type.get("tts", []) + by_type.get("s2s", [])
    if talk and model.talker is not None:
        result["speech_out"] = speech_out(model, tokenizer, engine, talk, samples_dir, samples)
    result["samples"] = [{"task": task, "lang": r["lang"], "voice": r.get("voice"),
                          "reference": r["conversations"][-1]["content"], "reply": h} for task, r, h in shown]
    return result


def _per_lang(records: list[dict], hypotheses: list[str], guess: dict[str, str]) -> dict:
    out = {}
    for lang in sorted({r["lang"] for r in records}):
        rows = [(r["conversations"][-1]["content"], h, lang) for r, h in zip(records, hypotheses, strict=True)
                if r["lang"] == lang]
        out[lang] = {"n": len(rows), "error_rate": error_rate(rows), "unit": "word" if lang == "en" else "character",
                     "empty_transcript": 1.0,
                     "most_frequent_transcript": error_rate([(r, guess.get(lang, ""), lang) for r, _, _ in rows])}
    return out


def speech_out(model, tokenizer, engine: Engine, records: list[dict], samples_dir, samples: int) -> dict:
    """Speak each record's reply (text prompt for tts, the spoken question for s2s), recognise the sound, and
    the character error rate against the text the model meant (tts: the sentence; s2s: its own answer)."""
    spoken, originals, round_trips = [], [], []
    for r in records:
        messages = [{"role": "user", "content": r["conversations"][0]["content"]}]
        clips = [log_mel(read_audio(r["base"] / a)) for a in r["audios"]]
        prompt = engine.chat_prompt(messages, audios=clips)
        spoken.append(speak(model, tokenizer, prompt, clips, SamplingParams(temperature=0, max_new_tokens=32)))
        original = read_audio(r["base"] / r["answer_audio"])
        originals.append(original)
        round_trips.append(model.codec.vocode(model.codec.encode(codec_log_mel(original))))
    heard = recognise(engine, [s.wave if len(s.wave) else torch.zeros(1600).numpy() for s in spoken])
    heard_original = recognise(engine, originals)
    heard_round_trip = recognise(engine, round_trips)
    out = {}
    for lang in sorted({r["lang"] for r in records}):
        idx = [i for i, r in enumerate(records) if r["lang"] == lang]
        meant = [r["conversations"][-1]["content"] for r in records]
        said = [tokenizer.decode(s.text_ids, skip_special_tokens=True).strip() for s in spoken]

        def cer(hyp, idx=idx, meant=meant):
            return error_rate([(meant[i], hyp[i], "zh") for i in idx])

        out[lang] = {"n": len(idx), "cer": cer(heard), "espeak_original": cer(heard_original),
                     "codec_round_trip": cer(heard_round_trip), "silence": 1.0,
                     "text_exact": sum(said[i] == meant[i] for i in idx) / len(idx),
                     "finished": sum(spoken[i].finished for i in idx) / len(idx),
                     "seconds": sum(spoken[i].seconds for i in idx) / len(idx)}
    if samples_dir is not None:
        folder = Path(samples_dir)
        for k, (r, s) in enumerate(list(zip(records, spoken, strict=True))[:samples]):
            if len(s.wave):
                write_wav(folder / f"{k}_{r['type']}_{r['lang']}.wav", s.wave)
    return out
