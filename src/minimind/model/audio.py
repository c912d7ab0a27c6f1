"""Hearing: log-mel features and the audio encoder that turns them into the language model's inputs.

    wave [samples] at 16 kHz ─ mel_power ─► power [80, F]  (F = samples // 160: 25 ms Hann windows every 10 ms)
    power ─ whisper_log_mel ─► log-mel [80, F]             (Whisper's scaling: log10, floor at max − 8, (x+4)/4)
    log-mel [B, 80, F] ─ AudioEncoder ─► [B, ⌈F/8⌉, encoder_size] ─ AudioProjector ─► [B, ⌈F/8⌉, hidden]

The spectrogram is Whisper's (`transformers.WhisperFeatureExtractor` computes the same numbers: tested): a centred
STFT of n_fft 400 (reflect padding), |X|², a Slaney-style mel filterbank of 80 triangles over 0–8 kHz, the last
frame dropped. The encoder is Whisper's front in small (two convolutions, the second of stride 2: 50 frames/s)
with MiniMind-O's frame rate: 4 frames stacked into one token (12.5 tokens/s, 80 ms each), then a few
bidirectional transformer layers. Padding never changes a clip's features: every convolution's input and output
is zeroed past the clip's frames, and attention skips padded tokens, so a clip gives the same tokens alone or in a
batch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from minimind.config import AudioConfig

N_FFT, HOP, SAMPLE_RATE = 400, 160, 16_000
FRAMES_PER_TOKEN = 8                      # log-mel frames per encoder token: stride 2, then 4 stacked (80 ms)


def hz_to_mel(hz):
    """The Slaney mel scale (librosa's default, Whisper's): linear below 1 kHz (3 mels per 200 Hz), log above."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = 3.0 * hz / 200.0
    log = hz >= 1000.0
    return np.where(log, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (math.log(6.4) / 27.0), mel)


def mel_to_hz(mel):
    mel = np.asarray(mel, dtype=np.float64)
    hz = 200.0 * mel / 3.0
    return np.where(mel >= 15.0, 1000.0 * np.exp((math.log(6.4) / 27.0) * (mel - 15.0)), hz)


def mel_filterbank(n_mels: int = 80, n_fft: int = N_FFT, rate: int = SAMPLE_RATE) -> torch.Tensor:
    """[n_mels, n_fft//2 + 1]: triangles with corners equally spaced in mels over 0–rate/2, each scaled by
    2 / (its width in Hz) so that every filter has the same area (Slaney normalisation)."""
    bins = np.linspace(0, rate / 2, n_fft // 2 + 1)
    corners = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(rate / 2), n_mels + 2))
    lower, centre, upper = corners[:-2, None], corners[1:-1, None], corners[2:, None]
    rising = (bins[None] - lower) / (centre - lower)
    falling = (upper - bins[None]) / (upper - centre)
    triangles = np.maximum(0.0, np.minimum(rising, falling))
    return torch.from_numpy(triangles * (2.0 / (upper - lower))).float()


_FILTERS: dict[int, torch.Tensor] = {}


def mel_power(wave: torch.Tensor | np.ndarray, n_mels: int = 80) -> torch.Tensor:
    """float [samples] (or [B, samples]) at 16 kHz → mel power [.., n_mels, samples // 160]."""
    wave = torch.as_tensor(wave, dtype=torch.float32)
    spec = torch.stft(wave, N_FFT, HOP, window=torch.hann_window(N_FFT, device=wave.device), center=True,
                      pad_mode="reflect", return_complex=True)[..., :-1].abs() ** 2
    filters = _FILTERS.setdefault(n_mels, mel_filterbank(n_mels)).to(wave.device)
    return filters @ spec


def whisper_log_mel(power: torch.Tensor) -> torch.Tensor:
    """Mel power [.., n_mels, F] → Whisper's log-mel: log10 (floored at 1e-10), no lower than the clip's maximum
    − 8 (80 dB of range), then (x + 4) / 4, about [−1, 1]."""
    log = power.clamp(min=1e-10).log10()
    log = torch.maximum(log, log.amax(dim=(-2, -1), keepdim=True) - 8.0)
    return (log + 4.0) / 4.0


def log_mel(wave: torch.Tensor | np.ndarray, n_mels: int = 80) -> torch.Tensor:
    """A clip [samples] → the encoder's input [n_mels, samples // 160] (at least one frame)."""
    wave = torch.as_tensor(wave, dtype=torch.float32)
    if wave.shape[-1] < N_FFT:
        wave = F.pad(wave, (0, N_FFT - wave.shape[-1]))
    return whisper_log_mel(mel_power(wave, n_mels))


def audio_tokens(frames: int) -> int:
    """Encoder tokens (and <|audio_pad|> positions) of a clip of `frames` log-mel frames: ⌈frames / 8⌉."""
    return -(-frames // FRAMES_PER_TOKEN)


def batch_mels(mels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips' log-mels [n_mels, F_i] → (a batch [B, n_mels, F_max rounded up to 8], frames [B]); padding holds each
    clip's own floor value, as if the clip had been longer and silent."""
    frames = torch.tensor([m.shape[-1] for m in mels])
    width = audio_tokens(int(frames.max())) * FRAMES_PER_TOKEN
    out = torch.stack([F.pad(m.float(), (0, width - m.shape[-1]), value=float(m.min())) for m in mels])
    return out, frames


def sinusoids(length: int, channels: int) -> torch.Tensor:
    """Whisper's fixed positions [length, channels]: sin and cos at periods geometric from 1 to 10,000."""
    rates = torch.exp(-math.log(10_000) * torch.arange(channels // 2) / (channels // 2 - 1))
    angles = torch.arange(length)[:, None] * rates[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class AudioEncoder(nn.Module):
    """log-mel [B, n_mels, F] (F a multiple of 8) and the clips' frames [B] → tokens [B, F/8, encoder_size]:
    GELU(conv k3) → GELU(conv k3 stride 2) → 4 frames stacked and projected → + sinusoidal positions →
    `encoder_layers` pre-norm transformer layers (bidirectional, padded tokens masked) → LayerNorm."""

    def __init__(self, config: AudioConfig):
        super().__init__()
        d = config.encoder_size
        self.conv1 = nn.Conv1d(config.n_mels, d, 3, padding=1)
        self.conv2 = nn.Conv1d(d, d, 3, stride=2, padding=1)
        self.stack = nn.Linear(4 * d, d)
        self.layers = nn.ModuleList(nn.TransformerEncoderLayer(d, config.encoder_heads, 4 * d, dropout=0.0,
                                                               activation="gelu", batch_first=True, norm_first=True)
                                    for _ in range(config.encoder_layers))
        self.norm = nn.LayerNorm(d)

    def forward(self, mels: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        B, _, T = mels.shape
        if T % FRAMES_PER_TOKEN:
            raise ValueError(f"mels have {T} frames; batch_mels pads them to a multiple of {FRAMES_PER_TOKEN}")
        padded = audio_tokens_tensor(frames) * FRAMES_PER_TOKEN       # each clip's frames, rounded up to 8
        keep = torch.arange(T, device=mels.device)[None] < padded[:, None]
        x = F.gelu(self.conv1(mels * keep[:, None])) * keep[:, None]
        x = F.gelu(self.conv2(x)) * keep[:, None, ::2]
        x = self.stack(x.transpose(1, 2).reshape(B, T // FRAMES_PER_TOKEN, -1))
        x = x + sinusoids(x.shape[1], x.shape[2]).to(x)
        pad = torch.arange(x.shape[1], device=x.device)[None] >= (padded // FRAMES_PER_TOKEN)[:, None]
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=pad)
        return self.norm(x)


def audio_tokens_tensor(frames: torch.Tensor) -> torch.Tensor:
    return (frames + FRAMES_PER_TOKEN - 1) // FRAMES_PER_TOKEN


class AudioProjector(nn.Module):
    """MiniMind-O's MMAudioProjector: LayerNorm → Linear(encoder_size, hidden) → GELU → Linear(hidden, hidden)."""

    def __init__(self, config: AudioConfig, hidden_size: int):
        super().__init__()
        self.norm = nn.LayerNorm(config.encoder_size)
        self.linear_1 = nn.Linear(config.encoder_size, hidden_size)
        self.linear_2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.gelu(self.linear_1(self.norm(x))))
