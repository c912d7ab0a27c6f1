"""Rotary position embeddings, with optional YaRN scaling (transformers' "yarn" rope semantics).

Base frequencies:  f_i = θ^(-2i/d),  i = 0 … d/2-1,  d = head_dim.
YaRN (Peng et al. 2023) with scale s over an original context L:
    dim(β)  = d·ln(L / (2πβ)) / (2·ln θ)                    the dimension that rotates β times over L
    low     = max(floor(dim(β_fast)), 0),  high = min(ceil(dim(β_slow)), d-1)
    γ_i     = clamp((i - low) / (high - low), 0, 1)          0 = keep (high freq), 1 = interpolate (low freq)
    f'_i    = f_i · (1 - γ_i) + (f_i / s) · γ_i
    cos and sin are multiplied by the attention factor 0.1·ln(s) + 1 (unless the config gives one).
"""

from __future__ import annotations

import math

import torch

from minimind.config import ModelConfig


def rope_frequencies(config: ModelConfig, device=None) -> tuple[torch.Tensor, float]:
    """Inverse frequencies [head_dim/2] in fp32 and the attention (cos/sin) scaling factor."""
    d, theta = config.head_dim, config.rope_theta
    wavelength = theta ** (torch.arange(0, d, 2, dtype=torch.float32, device=device) / d)
    inv_freq = 1.0 / wavelength
    scaling = config.rope_scaling
    if scaling is None:
        return inv_freq, 1.0

    s = scaling["factor"]
    original = scaling["original_max_position_embeddings"]
    attention_factor = scaling.get("attention_factor")
    if attention_factor is None:
        mscale, mscale_all_dim = scaling.get("mscale"), scaling.get("mscale_all_dim")
        if mscale and mscale_all_dim:
            attention_factor = _yarn_mscale(s, mscale) / _yarn_mscale(s, mscale_all_dim)
        else:
            attention_factor = _yarn_mscale(s)

    def correction_dim(rotations: float) -> float:
        return d * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = correction_dim(scaling.get("beta_fast") or 32), correction_dim(scaling.get("beta_slow") or 1)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, d - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(d // 2, dtype=torch.float32, device=device) - low) / (high - low)).clamp(0, 1)
    inv_freq = 1.0 / (s * wavelength) * ramp + inv_freq * (1 - ramp)
    return inv_freq, float(attention_factor)


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


class RotaryEmbedding(torch.nn.Module):
    """Maps positions [B, T] to (cos, sin) [B, T, head_dim], computed in fp32.

    The frequencies are a plain attribute, not a buffer, so that `model.to(torch.bfloat16)` cannot round them.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.inv_freq, self.attention_factor = rope_frequencies(config, device="cpu")

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        if self.inv_freq.device != positions.device:
            self.inv_freq = self.inv_freq.to(positions.device)
        with torch.autocast(positions.device.type, enabled=False):
            freqs = positions.float()[..., None] * self.inv_freq        # [B, T, d/2]
            emb = torch.cat((freqs, freqs), dim=-1)                     # [B, T, d]
            cos, sin = emb.cos() * self.attention_factor, emb.sin() * self.attention_factor
        return cos.to(dtype), sin.to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, T, H, d] by position: x·cos + rotate_half(x)·sin (the Llama/NeoX half-split layout)."""
    cos, sin = cos[:, :, None], sin[:, :, None]                         # broadcast over heads
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin
