"""The omni stage: rows (clips spliced, units laid out with the delay), the loss, a run through the trainer, and
speaking with the trained model."""

import numpy as np
import torch

from minimind.config import omni_preset
from minimind.model import load_model
from minimind.model.codec import delay
from minimind.model.loss import IGNORE_INDEX
from minimind.model.omni import OmniModel
from minimind.tokenizer import load_tokenizer
from minimind.train.config import load_config
from minimind.train.omni import OmniSFT, OmniTrainConfig, collate, read_examples
from minimind.train.trainer import train


def test_rows_hold_clips_text_and_delayed_units(speech_files):
    tokenizer = load_tokenizer()
    model = OmniModel(*omni_preset("tiny-o"))
    audio = model.audio
    examples = read_examples([str(speech_files)], tokenizer, audio.n_mels)
    asr, tts = examples[0], examples[1]
    assert asr.ids.count(audio.audio_token_id) == -(-asr.mels[0].shape[1] // 8) and asr.answer is None
    assert tokenizer.decode([t for t in tts.labels if t != IGNORE_INDEX]).startswith("<think>")
    tts.units = torch.randint(0, audio.codebook_size, (audio.codebooks, 5))
    batch = collate([asr, tts], tokenizer.pad_id, audio)
    streams = delay(tts.units, audio.pad_unit, audio.stop_unit)
    start = tts.start
    assert torch.equal(batch["units"][1, :, start:start + streams.shape[1]], streams)
    assert (batch["units"][0] == audio.pad_unit).all()                       # a row without sound
    targets = batch["unit_targets"][1]
    for c in range(audio.codebooks):                # targets[t] = the unit at t+1: its 5 codes and the stop
        row = targets[c][targets[c] != IGNORE_INDEX]
        assert row.tolist() == [*tts.units[c].tolist(), audio.stop_unit]
        assert int((targets[c] != IGNORE_INDEX).nonzero()[0]) == start + c
    assert batch["mels"].shape[0] == 1 and batch["frames"].tolist() == [asr.mels[0].shape[1]]


def test_stop_is_weighted_in_the_talker_loss():
    model = OmniModel(*omni_preset("tiny-o"))
    V = model.audio.unit_vocab
    logits = torch.zeros(1, model.audio.codebooks, 2, V)
    targets = torch.full((1, model.audio.codebooks, 2), IGNORE_INDEX)
    targets[0, 0, 0], targets[0, 0, 1] = 3, model.audio.stop_unit
    loss, steps = model.talker.loss(logits, targets)
    expected = (1 + model.audio.stop_weight) * np.log(V) / model.audio.codebooks
    assert abs(float(loss) - expected) < 1e-4 and int(steps) == 2


def test_omni_stage_trains_fits_the_codec_and_speaks(speech_files, tmp_path):
    config = load_config(None, ["stage=omni", "model=tiny-o", f"out={tmp_path / 'run'}",
                                f'data.train=["{speech_files}"]', f'data.val=["{speech_files}"]', "data.seq_len=128",
                                "batch_size=6", "max_steps=60", "optim.lr=3e-3", "optim.warmup_steps=5",
                                "log_every=20", "eval_every=60", "save_every=60", "samples=[]", "dtype=fp32"])
    train(config)
    metrics = [line for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if "text_loss" in line]
    assert metrics and "unit_loss" in metrics[-1]
    model = load_model(tmp_path / "run" / "model", device="cpu")
    assert isinstance(model, OmniModel) and model.codec.codebooks.abs().sum() > 0       # fitted and saved
    tokenizer = load_tokenizer(tmp_path / "run" / "model")
    stage = OmniSFT(config)
    stage.model = model
    examples = read_examples([str(speech_files)], tokenizer, model.audio.n_mels)
    for e in examples:
        e.units, e.answer = (model.codec.encode(e.answer), None) if e.answer is not None else (None, None)
    with torch.no_grad():
        text, units, _ = stage.parts(model.train(), collate(examples, tokenizer.pad_id, model.audio))
    fresh = OmniModel(*omni_preset("tiny-o"))
    fresh.codec.load_state_dict(model.codec.state_dict())
    with torch.no_grad():
        text0, units0, _ = stage.parts(fresh, collate(examples, tokenizer.pad_id, model.audio))
    assert float(text) < 0.5 * float(text0) and float(units) < float(units0)       # it learned both

    from minimind.infer.omni import speak
    prompt = tokenizer.render_chat([{"role": "user", "content": "Say: mid"}], add_generation_prompt=True)[0]
    spoken = speak(model.eval(), tokenizer, prompt, max_frames=30)
    assert spoken.codes.shape[0] == model.audio.codebooks
    assert len(spoken.wave) == max(0, spoken.codes.shape[1] * 8 * 160 - 160)


def transcribed_batch(speech_files, tmp_path):
    """(records, tokenizer, a fresh tiny-o model, a batch of the clips' records) with each clip's transcript the
    record's answer."""
    import json

    records = [json.loads(line) for line in speech_files.read_text().splitlines()]
    for r in records:
        if r["audios"]:
            r["transcripts"] = [r["conversations"][-1]["content"]]
    path = tmp_path / "said.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    for r in records:
        for key in ("audios", "answer_audio"):
            for name in ([r[key]] if isinstance(r.get(key), str) else r.get(key) or []):
                (tmp_path / name).write_bytes((speech_files.parent / name).read_bytes())
    tokenizer = load_tokenizer()
    torch.manual_seed(0)
    model = OmniModel(*omni_preset("tiny-o"))
    examples = read_examples([str(path)], tokenizer, model.audio.n_mels)
    batch = collate([e for e in examples if e.mels], tokenizer.pad_id, model.audio)
    return records, tokenizer, model, batch


def test_transcripts_give_the_encoder_a_ctc_loss(speech_files, tmp_path):
    records, tokenizer, model, batch = transcribed_batch(speech_files, tmp_path)
    said = [tokenizer.encode(r["conversations"][-1]["content"]) for r in records if r["audios"]]
    assert batch["ctc_lengths"].tolist() == [len(t) for t in said]
    assert batch["ctc_targets"].tolist() == [i for t in said for i in t]
    loss = model.ctc_loss(batch["mels"], batch["frames"], batch["ctc_targets"], batch["ctc_lengths"])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        optimizer.zero_grad()
        step = model.ctc_loss(batch["mels"], batch["frames"], batch["ctc_targets"], batch["ctc_lengths"])
        step.backward()
        optimizer.step()
    assert float(step) < 0.3 * float(loss)                   # the encoder alone learns to spell what it hears


def test_the_stage_encodes_each_batch_once_for_both_losses(speech_files, tmp_path):
    """With CTC on, the splice and the CTC head read one encoder pass; the loss equals the two computed apart."""
    _, _, model, batch = transcribed_batch(speech_files, tmp_path)
    stage = OmniSFT.__new__(OmniSFT)
    stage.settings, stage.model = OmniTrainConfig(ctc_weight=0.3), model
    passes = []
    model.audio_encoder.register_forward_hook(lambda *_: passes.append(1))
    total = stage.loss(model, batch).total
    assert len(passes) == 1
    text, units, _ = stage.parts(model, batch)
    apart = text + units + 0.3 * model.ctc_loss(batch["mels"], batch["frames"], batch["ctc_targets"],
                                                batch["ctc_lengths"])
    assert len(passes) == 3 and torch.allclose(total, apart, rtol=1e-5)
