"""The speech data: espeak-ng's clips, the records, and what is held out."""

import json

import pytest

from minimind.data.audio import read_audio
from minimind.data.default import speech
from minimind.data.formats import read_records
from minimind.errors import MiniMindError
from tests.omni.conftest import needs_espeak


def test_a_missing_espeak_is_named_with_the_way_to_install_it(monkeypatch):
    monkeypatch.setattr(speech.shutil, "which", lambda name: None)
    with pytest.raises(MiniMindError, match="apt-get install espeak-ng"):
        speech.build_speech("unused", {"asr": 1})


def test_held_out_questions_and_sentences_are_never_trained_on():
    sequences = set()
    train = speech.plan({"arithmetic": 300, "asr": 300}, held_out=False, seed=0, said=sequences)
    held = speech.plan({"arithmetic": 60, "asr": 60}, held_out=True, seed=1, said=sequences)
    trained = {i["question"] for i in train if "question" in i}
    unseen = [i for i in held if "question" in i and not i["seen_question"]]
    assert unseen and not {i["question"] for i in unseen} & trained
    askable = {speech.question(a, op, b, lang) for a in range(10) for op in speech.OPS for b in range(10)
               for lang in ("en", "zh") if (op == "plus" or b <= a) and
               (a * 7 + b * 3 + (op == "minus") * 5) % 5 != 0}          # the triples training may ask
    assert trained <= askable and {i["question"] for i in held if i.get("seen_question")} <= askable
    said = {i["reply"] for i in train if i["type"] == "asr"}
    assert not {i["reply"] for i in held if i["type"] == "asr"} & said
    voices = {c["voice"].partition("+")[2] for i in held for c in i["clips"]}
    assert voices <= set(speech.VARIANTS_HELD_OUT)


@needs_espeak
def test_build_speech_writes_readable_clips_and_valid_records(tmp_path):
    manifest = speech.build_speech(tmp_path, {"asr": 3, "arithmetic": 3, "tts": 2, "s2s": 2},
                                   {"asr": 2, "arithmetic": 2, "tts": 1, "s2s": 1})
    assert manifest["splits"]["train"]["records"] == 10 and manifest["splits"]["heldout"]["records"] == 6
    records = list(read_records(tmp_path / "speech.jsonl", "speech"))
    assert {r["type"] for r in records} == {"asr", "arithmetic", "tts", "s2s"}
    for r in records:
        for name, said in zip(r["audios"], r["transcripts"] or [], strict=True):
            wave = read_audio(tmp_path / name)
            assert 0.2 < len(wave) / 16000 < 6 and said
        if r["type"] in ("tts", "s2s"):
            assert read_audio(tmp_path / r["answer_audio"]).std() > 0.01
    held = [json.loads(line) for line in (tmp_path / "speech_heldout.jsonl").read_text().splitlines()]
    assert all(r["voice"].partition("+")[2] in speech.VARIANTS_HELD_OUT for r in held if r["audios"])
