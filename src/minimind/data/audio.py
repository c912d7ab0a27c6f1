"""Sound in and out: a file, bytes or a `data:` URL → a mono float waveform at 16 kHz, with errors that name the
source; a waveform → WAV bytes.

    read_audio(source)      → float32 [samples] in [-1, 1] at SAMPLE_RATE (mixed to mono, resampled)
    wav_bytes(wave)         → a 16-bit PCM WAV file's bytes
    write_wav(path, wave)   → the same, written atomically
    resample(wave, a, b)    → polyphase resampling from rate a to rate b

WAV, FLAC and MP3 (and what else libsndfile reads) are decoded by `soundfile`; a file it cannot read is refused
with its reason, never half-read.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import numpy as np

from minimind.errors import MiniMindError
from minimind.fileio import atomic_write_bytes, decode_base64, read_input

SAMPLE_RATE = 16_000              # what the audio encoder and the codec read (Whisper's and SenseVoice's rate)
MAX_BYTES = 20 * 2**20            # a larger upload is refused before decoding
MAX_SECONDS = 60.0                # a longer clip is refused after decoding


def read_audio(source: str | Path | bytes, where: str = "audio") -> np.ndarray:
    """A path or encoded bytes (wav, flac, mp3, ogg) → float32 [samples] at 16 kHz; a MiniMindError
    "where: problem" for anything unreadable, empty or too long."""
    import soundfile

    data = read_input(source, where, "audio", MAX_BYTES)
    try:
        wave, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise MiniMindError(f"{where}: not a readable audio file (wav, flac, mp3, ogg): {e}") from None
    if wave.shape[0] == 0:
        raise MiniMindError(f"{where}: the audio holds no samples")
    if wave.shape[0] / rate > MAX_SECONDS:
        raise MiniMindError(f"{where}: the audio lasts {wave.shape[0] / rate:.1f} s; the limit is {MAX_SECONDS:.0f} s")
    wave = wave.mean(axis=1)
    if not np.isfinite(wave).all():
        raise MiniMindError(f"{where}: the audio holds non-finite samples")
    return resample(wave, rate, SAMPLE_RATE)


def resample(wave: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """float [samples] at `rate` → at `target`: polyphase filtering (scipy's resample_poly, a Kaiser-windowed
    low-pass), the ratio reduced to lowest terms (22,050 → 16,000 Hz is 320/441)."""
    if rate == target:
        return np.asarray(wave, dtype=np.float32)
    from scipy.signal import resample_poly

    ratio = Fraction(target, rate)
    return resample_poly(wave, ratio.numerator, ratio.denominator).astype(np.float32)


def wav_bytes(wave: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """float [samples] in [-1, 1] → a mono 16-bit PCM WAV file (clipped to the range)."""
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(np.asarray(wave, dtype=np.float32), -1, 1), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def write_wav(path: str | Path, wave: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    """`wav_bytes` written to `path` through a temporary name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, wav_bytes(wave, rate))
    return path


def from_base64(data: str, where: str = "input_audio.data") -> bytes:
    """The bytes of base64 audio (OpenAI's input_audio.data; a `data:audio/…;base64,` prefix is accepted)."""
    if not isinstance(data, str) or not data:
        raise MiniMindError(f"{where}: must be base64-encoded audio")
    return decode_base64(data, where, "audio", MAX_BYTES)
