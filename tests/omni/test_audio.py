"""Sound in: reading files, Whisper's log-mel (against transformers' WhisperFeatureExtractor), the encoder."""

import io

import numpy as np
import pytest
import soundfile
import torch

from minimind.config import omni_preset
from minimind.data.audio import SAMPLE_RATE, from_base64, read_audio, resample, wav_bytes
from minimind.errors import MiniMindError
from minimind.model.audio import audio_tokens, batch_mels, log_mel, mel_filterbank
from minimind.model.omni import OmniModel
from tests.omni.conftest import tone


def test_log_mel_equals_whisper_feature_extractor():
    from transformers import WhisperFeatureExtractor
    from transformers.audio_utils import mel_filter_bank

    wave = tone(1.3, 523.0)
    reference = WhisperFeatureExtractor(feature_size=80)(wave, sampling_rate=SAMPLE_RATE, padding="longest",
                                                         return_tensors="np").input_features[0]
    ours = log_mel(wave).numpy()
    assert ours.shape == reference.shape == (80, len(wave) // 160)
    np.testing.assert_allclose(ours, reference, atol=1e-4)
    bank = mel_filter_bank(num_frequency_bins=201, num_mel_filters=80, min_frequency=0.0, max_frequency=8000.0,
                           sampling_rate=SAMPLE_RATE, norm="slaney", mel_scale="slaney")
    np.testing.assert_allclose(mel_filterbank().numpy(), bank.T, atol=1e-7)


def test_a_tone_lights_its_own_mel_band():
    low, high = log_mel(tone(0.5, 300.0)).mean(1), log_mel(tone(0.5, 3000.0)).mean(1)
    assert int(low.argmax()) < 15 < int(high.argmax())


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "MP3", "OGG"])
def test_read_audio_formats_resampled_to_16k(fmt):
    wave = tone(0.5, 440.0)
    buffer = io.BytesIO()
    at_22k = resample(wave, SAMPLE_RATE, 22050)
    soundfile.write(buffer, np.stack([at_22k, at_22k], 1), 22050, format=fmt)     # stereo, 22.05 kHz
    back = read_audio(buffer.getvalue())
    assert abs(len(back) - len(wave)) < 400
    spectrum = np.abs(np.fft.rfft(back))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / len(back) - 440.0) < 5


def test_bad_audio_is_refused_by_name(tmp_path):
    with pytest.raises(MiniMindError, match="clip.wav: not a readable audio file"):
        read_audio(b"RIFF....not audio", where="clip.wav")
    with pytest.raises(MiniMindError, match="not found"):
        read_audio(tmp_path / "missing.wav")
    with pytest.raises(MiniMindError, match="not valid base64"):
        from_base64("%%%")
    assert read_audio(from_base64("data:audio/wav;base64," + __import__("base64").b64encode(
        wav_bytes(tone(0.2))).decode())).shape == (3200,)


def test_encoder_gives_a_clip_the_same_tokens_alone_or_in_a_batch():
    torch.manual_seed(0)
    model = OmniModel(*omni_preset("tiny-o")).eval()
    long, short = log_mel(tone(1.0, 500.0)), log_mel(tone(0.43, 900.0))
    together = model.audio_features(*batch_mels([long, short]))
    alone = model.audio_features(*batch_mels([short]))
    assert together.shape[0] == audio_tokens(long.shape[1]) + audio_tokens(short.shape[1])
    torch.testing.assert_close(together[-alone.shape[0]:], alone, atol=1e-5, rtol=1e-5)


def test_audio_runs_are_spliced_in_reading_order():
    torch.manual_seed(0)
    model = OmniModel(*omni_preset("tiny-o")).eval()
    clips = [log_mel(tone(0.3, 400.0)), log_mel(tone(0.5, 1200.0))]
    n = [audio_tokens(c.shape[1]) for c in clips]
    pad = model.audio.audio_token_id
    ids = torch.tensor([[1, *[pad] * n[0], 7, *[pad] * n[1], 8]])
    embeds = model.embed(ids, *batch_mels(clips))
    features = model.audio_features(*batch_mels(clips))
    torch.testing.assert_close(embeds[0, 1:1 + n[0]], features[:n[0]])
    torch.testing.assert_close(embeds[0, 2 + n[0]:2 + n[0] + n[1]], features[n[0]:])
    torch.testing.assert_close(embeds[0, 1 + n[0]], model.model.embed_tokens.weight[7])
