"""Speaking: the Thinker and the Talker decoding in step, text and sound out (MiniMind-O's stream_generate).

    prefill the prompt (clips spliced in) through the Thinker, and its bridge states through the Talker
    for t = start, start+1, …:
        x_t   the text token at t: sampled from the Thinker; after its end-of-turn, "\\n" then pad (as trained)
        the Thinker reads x_t → logits for x_{t+1}, and its bridge state h_t
        the Talker reads h_t and the units at t → units at t+1, codebook c once t ≥ start + c (the delay)
    until every codebook has emitted its stop (or `max_frames`); then undelay → codes → Griffin-Lim → sound.

Units are drawn at a low temperature with top-k (MiniMind-O: 0.2, top-50) or greedily (temperature 0). Text is
sampled with the engine's own `SamplingParams` (temperature, top-k/p, min-p; greedy at 0). One conversation at a
time: the server and `chat --speak` call it for replies that are asked to be spoken.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from minimind.errors import MiniMindError
from minimind.infer.sampling import SamplingParams, filter_logits
from minimind.model.audio import batch_mels
from minimind.model.cache import KVCache
from minimind.model.codec import undelay
from minimind.model.omni import OmniModel, check_audio_tokens


@dataclass
class Spoken:
    text_ids: list[int]            # the reply's tokens (its end-of-turn excluded)
    codes: torch.Tensor            # units [codebooks, frames]
    wave: np.ndarray               # float32 at 16 kHz
    finished: bool                 # every codebook stopped within max_frames

    @property
    def seconds(self) -> float:
        return len(self.wave) / 16_000


def _draw(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> torch.Tensor:
    """[R, V] → ids [R]: argmax at temperature 0, else a draw from the filtered softmax (temperature, top-k/p,
    min-p)."""
    if params.temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(filter_logits(logits.float(), params), -1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.inference_mode()
def speak(model: OmniModel, tokenizer, prompt: list[int], clips: list[torch.Tensor] | None = None,
          params: SamplingParams | None = None, unit_temperature: float = 0.2, unit_top_k: int = 50,
          max_frames: int = 250, seed: int = 0) -> Spoken:
    """Reply to the generation prompt `prompt` (its <|audio_pad|> runs filled by `clips`, log-mels) in text and
    sound. `max_frames` unit frames of 80 ms at most (20 s)."""
    if model.talker is None:
        raise MiniMindError("this omni model has no Talker (talker_layers 0): it hears but does not speak")
    params = params or SamplingParams(temperature=0)
    clips = clips or []
    check_audio_tokens(prompt, [m.shape[-1] for m in clips], model.audio, where="the prompt")
    device = model.model.embed_tokens.weight.device
    audio, C = model.audio, model.audio.codebooks
    generator = torch.Generator(device=device).manual_seed(seed)
    newline = tokenizer.encode("\n")
    unit_params = SamplingParams(temperature=unit_temperature, top_k=unit_top_k)
    steps = max(params.max_new_tokens + 2, max_frames + C + 1)
    capacity = len(prompt) + steps + 1
    cache, talker_cache = KVCache(model.config, 1, capacity, device=device), \
        KVCache(model.talker.config, 1, capacity, device=device)
    media = {}
    if clips:
        mels, frames = batch_mels(clips)
        media = {"mels": mels.to(device), "frames": frames.to(device)}
    ids = torch.tensor([prompt], device=device)
    pads = torch.full((1, C, len(prompt)), audio.pad_unit, device=device)
    h, _, unit_logits = model.think_and_talk(ids, pads, cache=cache, talker_cache=talker_cache, **media)
    text_logits = model.lm_head(h[:, -1])

    start, text, after, streams = len(prompt), [], [], []
    units = torch.full((C,), audio.pad_unit, device=device)        # the units placed at the current step
    stopped = torch.zeros(C, dtype=torch.bool, device=device)
    text_done = False
    for t in range(start, start + steps):
        if not text_done:
            token = int(_draw(text_logits, params, generator)[0])
            if token == tokenizer.eos_id or len(text) >= params.max_new_tokens:
                text_done, after = True, [tokenizer.eos_id, *newline]
            else:
                text.append(token)
        x = after.pop(0) if text_done and after else (tokenizer.pad_id if text_done else text[-1])
        h, _, unit_logits = model.think_and_talk(torch.tensor([[x]], device=device), units.view(1, C, 1),
                                                 cache=cache, talker_cache=talker_cache)
        text_logits = model.lm_head(h[:, -1])
        drawn = _draw(unit_logits[0, :, -1], unit_params, generator)                            # units at t+1
        active = (torch.arange(C, device=device) <= t - start) & (t - start < max_frames + C)   # the delay
        units = torch.where(active & ~stopped, drawn, torch.full_like(drawn, audio.pad_unit))
        stopped |= active & (drawn == audio.stop_unit)
        streams.append(units.clone())
        if bool(stopped.all()) and text_done:
            break
    # streams[k] are the units at step start + 1 + k; delay() puts codebook c's first unit at start + c + 1
    placed = torch.stack([torch.full((C,), audio.pad_unit, device=device), *streams], dim=1).cpu()
    codes = undelay(placed, audio.pad_unit, audio.stop_unit)
    wave = model.codec.vocode(codes.to(device)) if codes.shape[1] else np.zeros(0, dtype=np.float32)
    return Spoken(text, codes, wave, bool(stopped.all()))
