"""`minimind omni`: hearing and speaking through the one trainer (MiniMind-O's SFT). What a record holds decides
what it trains:

    speech recognition   user <audio> + "Transcribe."  → the words              text cross-entropy
    spoken instructions  user <audio> (a question)       → the answer             text cross-entropy
    text-to-speech       user text                       → the words + their sound   text CE + Talker CE
    speech-to-speech     user <audio>                    → the answer + its sound    text CE + Talker CE

Each clip (a `speech` record's "audios", one per `<audio>` marker) becomes ⌈frames/8⌉ <|audio_pad|> positions that
its encoder features fill. The answer's sound ("answer_audio") becomes codec units (`minimind.model.codec`; the
codec is fitted on the training answers when the model has none yet) laid out with the delay pattern from the
first position of the answer's text, one unit frame per text position; a row is as long as its text or its
units, whichever is longer, the Thinker reading pad tokens after its answer as MiniMind-O's does. The loss per
row is

    Σ_answer tokens −log p(token)  +  Σ_steps (1/C) Σ_c w·(−log p(unit_c))          (w = 10 for stop, else 1)

summed, over as many units as there are text targets and unit steps (the trainer divides). Clips whose record says
what they hold ("transcripts") also train the encoder directly: `omni.ctc_weight` × CTC's −log p(transcript | clip)
through the model's CTC head, counted per transcript token (SenseVoice, whose encoder MiniMind-O borrows, was
trained so; from nothing, it is what teaches the encoder to hear in minutes). `omni.train` says what
learns: all (default), projector (the audio projector alone: MiniMind-O's audio-projector phase),
encoder+projector, or all-but-encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from minimind.config import OMNI_PRESETS, PRESETS, omni_preset
from minimind.data.audio import read_audio
from minimind.data.formats import expand_audio_markers, read_records
from minimind.data.loader import ShuffledBatches
from minimind.errors import MiniMindError
from minimind.model import load_model
from minimind.model.audio import batch_mels, log_mel
from minimind.model.codec import codec_log_mel, delay
from minimind.model.loss import IGNORE_INDEX
from minimind.model.omni import OmniModel, is_omni_dir
from minimind.tokenizer import load_tokenizer
from minimind.train.stages import Loss, Stage, StageData, model_dir

TRAINABLE = ("all", "projector", "encoder+projector", "all-but-encoder")


@dataclass
class OmniTrainConfig:
    train: Literal[TRAINABLE] = "all"     # which parts learn, the rest frozen
    preset: str = "mini-o"                # the audio side's shape when `model` is a text model
    ctc_weight: float = 1.0               # the encoder's CTC loss on the clips' transcripts (0: off)

    def validate(self) -> None:
        if self.train not in TRAINABLE:
            raise MiniMindError(f"config key 'omni.train' must be one of {', '.join(TRAINABLE)}; got {self.train!r}")
        if not self.ctc_weight >= 0:
            raise MiniMindError(f"config key 'omni.ctc_weight' must be ≥ 0; got {self.ctc_weight}")
        if self.preset not in OMNI_PRESETS:
            raise MiniMindError(f"config key 'omni.preset' must be one of {', '.join(OMNI_PRESETS)}")


@dataclass
class Example:
    ids: list[int]                       # the conversation, each <audio> a run of <|audio_pad|>
    labels: list[int]                    # ids on the answer's tokens, −100 elsewhere
    mels: list[torch.Tensor]             # each clip's log-mel [n_mels, F] (fp16)
    start: int                           # the first position of the last answer (where its units begin)
    answer: torch.Tensor | None = None   # the answer's codec log-mel, until it is encoded
    units: torch.Tensor | None = None    # its units [codebooks, U]
    transcripts: list[list[int]] | None = None   # what each clip says, as token ids (the CTC targets)


def read_examples(files: list[str], tokenizer, n_mels: int) -> list[Example]:
    """The speech records of `files` → Examples (clips read and featurised; errors name "file:line")."""
    examples = []
    for file in files:
        for record in read_records(file, "speech"):
            base, where = Path(record["base"]), record["where"]
            clips = [read_audio(a if isinstance(a, bytes) else base / a, where=f"{where}: audios[{k}]")
                     for k, a in enumerate(record["audios"])]
            mels = [log_mel(c, n_mels) for c in clips]
            messages = expand_audio_markers(record["messages"], [m.shape[1] for m in mels])
            ids, mask = tokenizer.render_chat(messages, record["tools"])
            start = len(tokenizer.render_chat(messages[:-1], record["tools"], add_generation_prompt=True)[0])
            answer = None
            if record["answer_audio"] is not None:
                source = record["answer_audio"]
                wave = read_audio(source if isinstance(source, bytes) else base / source,
                                  where=f"{where}: answer_audio")
                answer = codec_log_mel(wave, n_mels)
            said = [tokenizer.encode(t) for t in record["transcripts"]] if record["transcripts"] else None
            examples.append(Example(ids, [t if m else IGNORE_INDEX for t, m in zip(ids, mask, strict=True)],
                                    [m.half() for m in mels], start, answer, transcripts=said))
    if not examples:
        raise MiniMindError(f"{', '.join(files)}: no speech records")
    return examples


def collate(examples: list[Example], pad_id: int, audio) -> dict[str, torch.Tensor]:
    """Examples → a batch: input_ids / labels [B, L] (right-padded; L covers each row's text and units),
    the clips' mels [N, n_mels, F] and frames [N], and with any units, units [B, C, L] (the delay pattern from
    each row's start, pad elsewhere) and unit_targets [B, C, L] (units[t+1] where a stream holds a unit or its
    stop, −100 elsewhere)."""
    C = audio.codebooks
    streams = [delay(e.units, audio.pad_unit, audio.stop_unit) if e.units is not None else None for e in examples]
    L = max(max(len(e.ids), e.start + (s.shape[1] if s is not None else 0))
            for e, s in zip(examples, streams, strict=True))
    B = len(examples)
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    labels = torch.full((B, L), IGNORE_INDEX, dtype=torch.long)
    for b, e in enumerate(examples):
        ids[b, :len(e.ids)] = torch.tensor(e.ids)
        labels[b, :len(e.labels)] = torch.tensor(e.labels)
    batch = {"input_ids": ids, "labels": labels}
    clips = [m for e in examples for m in e.mels]
    if clips:
        batch["mels"], batch["frames"] = batch_mels(clips)
        said = [t for e in examples for t in (e.transcripts or [[]] * len(e.mels))]
        if any(said):
            batch["ctc_targets"] = torch.tensor([i for t in said for i in t], dtype=torch.long)
            batch["ctc_lengths"] = torch.tensor([len(t) for t in said], dtype=torch.long)
    if any(s is not None for s in streams):
        units = torch.full((B, C, L + 1), audio.pad_unit, dtype=torch.long)
        targets = torch.full((B, C, L + 1), IGNORE_INDEX, dtype=torch.long)
        for b, (e, s) in enumerate(zip(examples, streams, strict=True)):
            if s is None:
                continue
            units[b, :, e.start:e.start + s.shape[1]] = s
            for c in range(C):                  # the stream's units and its stop, not the pads around them
                targets[b, c, e.start + c + 1:e.start + s.shape[1] - C + c + 1] = s[c, c + 1:s.shape[1] - C + c + 1]
        batch["units"], batch["unit_targets"] = units[..., :L], targets[..., 1:]
    return batch


class ExampleLoader(ShuffledBatches):
    """Seeded shuffled batches of examples, collated, split across ranks, resumable."""

    def __init__(self, examples: list[Example], batch: int, seed: int, rank: int, world_size: int, device,
                 pad_id: int, audio):
        super().__init__(len(examples), batch, seed, rank, world_size)
        self.examples, self.device, self.pad_id, self.audio = examples, device, pad_id, audio

    def collate(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        batch = collate([self.examples[i] for i in indices], self.pad_id, self.audio)
        return {k: v.to(self.device) for k, v in batch.items()}


class OmniSFT(Stage):
    """Text and unit cross-entropy on speech records (the module docstring)."""
    generative = False

    def __init__(self, config):
        self.config, self.settings = config, config.omni
        self.examples: dict[str, list[Example]] = {}
        self.model: OmniModel | None = None

    def build_model(self, source: str, device: torch.device) -> OmniModel:
        if source in OMNI_PRESETS:
            model = OmniModel(*omni_preset(source))
        elif is_omni_dir(source):
            model = load_model(source, device="cpu", dtype=torch.float32, kernels="reference")
        else:                                         # a text model grows ears and a voice (MiniMind-O's start)
            text = (Stage.build_model(self, source, torch.device("cpu")) if source in PRESETS
                    else load_model(model_dir(source), device="cpu", dtype=torch.float32, kernels="reference"))
            model = OmniModel(text.config, omni_preset(self.settings.preset)[1])
            model.load_state_dict(text.state_dict(), strict=False)
            model.tie_weights()
            copy_top_layers(model)
        freeze(model, self.settings.train)
        self.model = model.to(device).train()
        return self.model

    def build(self, config, tokenizer_dir, main, barrier) -> StageData:
        tokenizer = load_tokenizer(tokenizer_dir)
        audio = self.model.audio
        train = read_examples(config.data.train, tokenizer, audio.n_mels)
        val = read_examples(config.data.val, tokenizer, audio.n_mels) if config.data.val else []
        val = [val[i] for i in np.random.default_rng(0).permutation(len(val))]   # every kind in the first batches
        answers = [e.answer for e in train if e.answer is not None]
        if self.model.talker is not None and answers and not self.model.codec.codebooks.any():
            report = self.model.codec.fit([a.to(self.model.codec.codebooks.device) for a in answers], seed=config.seed)
            if main:
                print(f"codec: fitted {audio.codebooks} codebooks of {audio.codebook_size} on {report['vectors']:,} "
                      f"unit frames; error after each {[round(e, 3) for e in report['mse_after_codebook']]} "
                      f"(variance {report['variance']:.3f})")
        for e in train + val:
            if e.answer is not None and self.model.talker is not None:
                e.units, e.answer = self.model.codec.encode(e.answer).cpu(), None
        longest = max(len(collate([e], 0, audio)["input_ids"][0]) for e in train)
        if longest > config.data.seq_len:
            raise MiniMindError(f"speech data: a row needs {longest} positions (text, clips and units); data.seq_len "
                                f"is {config.data.seq_len}")
        self.examples = {"train": train, "val": val}
        self.pad_id = tokenizer.pad_id
        return StageData(train=None, rows=list(range(len(train))), val=None, val_rows=list(range(len(val))))

    def loader(self, model, tokenizer, data, config, info, device):
        return ExampleLoader(self.examples["train"], config.batch_size, config.seed, info.rank, info.world_size,
                             device, tokenizer.pad_id, self.model.audio)

    def validation(self, data, config, device) -> list:
        val, size = self.examples["val"], config.batch_size
        batches = [collate(val[s:s + size], self.pad_id, self.model.audio) for s in range(0, len(val), size)]
        return [{k: v.to(device) for k, v in b.items()} for b in batches[:config.eval_batches]]

    def count(self, batch):
        count = (batch["labels"][:, 1:] != IGNORE_INDEX).sum()
        if "unit_targets" in batch:
            count = count + (batch["unit_targets"] != IGNORE_INDEX).any(1).sum()
        if self.ctc(batch):
            count = count + batch["ctc_lengths"].sum()
        return count

    def ctc(self, batch) -> bool:
        return self.settings.ctc_weight > 0 and "ctc_lengths" in batch and self.model.ctc_head is not None

    def parts(self, model, batch, encoded=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Σ text CE, Σ unit loss, MoE aux) of a batch, its clips encoded already when `encoded` is given; the
        encoder's weighted CTC loss is added beside them (see `loss`)."""
        audio = {"mels": batch["mels"], "frames": batch["frames"], "encoded": encoded} if "mels" in batch else {}
        if "units" not in batch or model.talker is None:
            out = model(batch["input_ids"], labels=batch["labels"], reduction="sum", **audio)
            return out.loss, torch.zeros_like(out.loss), out.aux_loss
        h, aux, logits = model.think_and_talk(batch["input_ids"], batch["units"], **audio)
        targets = torch.nn.functional.pad(batch["labels"][:, 1:], (0, 1), value=IGNORE_INDEX)
        unit_loss, _ = model.talker.loss(logits, batch["unit_targets"])
        return model.lm_loss(h, targets), unit_loss, aux if aux is not None else h.new_zeros((), dtype=torch.float32)

    def loss(self, model, batch):
        ctc = self.ctc(batch)
        encoded = model.audio_encoder(batch["mels"], batch["frames"]) if ctc else None   # one pass, both losses
        text, units, aux = self.parts(model, batch, encoded)
        total = text + units
        if ctc:
            total = total + self.settings.ctc_weight * model.ctc_loss(
                batch["mels"], batch["frames"], batch["ctc_targets"], batch["ctc_lengths"], encoded)
        return Loss(total, aux)

    @torch.no_grad()
    def evaluate(self, model, batches, token_bytes) -> dict:
        """Mean text loss per answer token and mean unit loss per step, on the validation records."""
        sums = torch.zeros(4, dtype=torch.float64)
        for batch in batches:
            text, units, _ = self.parts(model, batch)
            steps = (batch["unit_targets"] != IGNORE_INDEX).any(1).sum() if "unit_targets" in batch else 0
            sums += torch.tensor([float(text), float((batch["labels"][:, 1:] != IGNORE_INDEX).sum()), float(units),
                                  float(steps)], dtype=torch.float64)
        out = {"text_loss": (sums[0] / sums[1].clamp(min=1)).item()}
        if sums[3]:
            out["unit_loss"] = (sums[2] / sums[3]).item()
        return out


def copy_top_layers(model: OmniModel) -> None:
    """MiniMind-O starts its Talker as a copy of the Thinker's layers 4–7 (its top half): the top `talker_layers`
    of the Thinker here."""
    if model.talker is None or len(model.model.layers) < len(model.talker.model.layers):
        return
    thinker, talker = model.model.layers, model.talker.model.layers
    for k, layer in enumerate(talker):
        layer.load_state_dict(thinker[len(thinker) - len(talker) + k].state_dict())


def freeze(model: OmniModel, train: str) -> None:
    """Make only the chosen parts trainable (the module docstring)."""
    model.requires_grad_(train in ("all", "all-but-encoder"))
    if train == "all-but-encoder":
        model.audio_encoder.requires_grad_(False)
    model.audio_projector.requires_grad_(True)
    if train == "encoder+projector":
        model.audio_encoder.requires_grad_(True)
