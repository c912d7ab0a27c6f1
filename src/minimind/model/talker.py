"""The Talker: MiniMind-O's speech head, a small decoder that reads the Thinker and writes audio units.

At step t (one step per text position; `minimind.model.codec` for the units and the delay pattern):

    x_t = text_scale · W_b h_t  +  audio_scale · (1/C) Σ_c E[c·V + u_{c,t}]
    z   = Backbone(x)                                   (causal decoder layers of the Thinker's width)
    p(u_{c,t+1} | …) = softmax(W_c z_t)                  for every codebook c at once

h_t is the Thinker's hidden state after its bridge layer (`AudioConfig.bridge`, the middle one) at position t,
u_{c,t} the unit of codebook c placed at step t (pad before its stream starts and after it stops), V = units per
codebook (codebook entries, pad, stop). Codebooks share one embedding table and one head matrix, offset by c·V
(mini-omni's layer shift; MiniMind-O adds small per-codebook adapters to a shared table). text_scale starts at 3
and audio_scale at 1, as in MiniMind-O, and both learn. The loss is each codebook's cross-entropy, the stop unit
weighted `stop_weight` (×10): stopping on time is one decision per stream and costs the whole utterance if missed.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from minimind.config import AudioConfig, ModelConfig
from minimind.model.cache import KVCache
from minimind.model.loss import IGNORE_INDEX
from minimind.model.transformer import Backbone


def talker_config(text: ModelConfig, audio: AudioConfig) -> ModelConfig:
    """The Talker's decoder: the Thinker's layer shape, `talker_layers` deep, dense, causal, full attention; its
    token table is the codebooks' shared embedding (codebooks × units)."""
    return dataclasses.replace(text, num_hidden_layers=audio.talker_layers,
                               vocab_size=audio.codebooks * audio.unit_vocab, num_experts=0, layer_types=None,
                               use_sliding_window=False, objective="causal", tie_word_embeddings=False)


class Talker(nn.Module):
    """bridge [B, T, hidden] and units [B, C, T] → logits [B, C, T, units per codebook] (see the module
    docstring); with a KVCache, T new steps after the cached ones."""

    def __init__(self, text: ModelConfig, audio: AudioConfig):
        super().__init__()
        self.audio, self.config = audio, talker_config(text, audio)
        self.model = Backbone(self.config)
        self.bridge_proj = nn.Linear(text.hidden_size, text.hidden_size, bias=False)
        self.text_scale = nn.Parameter(torch.tensor(3.0))
        self.audio_scale = nn.Parameter(torch.tensor(1.0))
        self.head = nn.Linear(text.hidden_size, audio.codebooks * audio.unit_vocab, bias=False)

    def forward(self, bridge: torch.Tensor, units: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, C, T = units.shape
        offsets = torch.arange(C, device=units.device)[:, None] * self.audio.unit_vocab
        audio = self.model.embed_tokens(units + offsets).mean(1)                             # [B, T, hidden]
        x = self.text_scale * self.bridge_proj(bridge) + self.audio_scale * audio
        z, _ = self.model(units[:, 0], cache=cache, inputs_embeds=x)
        return self.head(z).view(B, T, C, self.audio.unit_vocab).transpose(1, 2)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """logits [B, C, T, V], targets [B, C, T] (−100: none) → (Σ over steps of the codebooks' mean weighted
        cross-entropy, steps with a target). Step t's targets are the units placed at t+1."""
        ce = F.cross_entropy(logits.float().flatten(0, 2), targets.flatten().clamp(min=0), reduction="none")
        valid = targets.flatten() != IGNORE_INDEX
        weight = torch.where(targets.flatten() == self.audio.stop_unit, self.audio.stop_weight, 1.0) * valid
        steps = (targets != IGNORE_INDEX).any(1)                                            # [B, T]
        return (ce * weight).sum() / self.audio.codebooks, steps.sum()
