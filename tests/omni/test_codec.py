"""Sound out: the delay pattern, the codec, Griffin-Lim's round trip."""

import numpy as np
import torch

from minimind.config import AudioConfig
from minimind.model.codec import MelCodec, codec_log_mel, delay, griffin_lim, undelay
from tests.omni.conftest import tone

PAD, STOP = 16, 17


def test_delay_pattern_places_codebook_c_c_plus_one_steps_late_and_undoes():
    codes = torch.arange(12).view(3, 4)
    streams = delay(codes, PAD, STOP)
    assert streams.tolist() == [[PAD, 0, 1, 2, 3, STOP, PAD, PAD],
                                [PAD, PAD, 4, 5, 6, 7, STOP, PAD],
                                [PAD, PAD, PAD, 8, 9, 10, 11, STOP]]
    assert torch.equal(undelay(streams, PAD, STOP), codes)


def test_undelay_stops_at_the_first_stream_to_end():
    streams = delay(torch.arange(12).view(3, 4), PAD, STOP)
    streams[1, 4] = STOP                                  # codebook 1 stops after 2 frames
    assert undelay(streams, PAD, STOP).shape == (3, 2)


def test_griffin_lim_rebuilds_a_known_magnitude():
    wave = torch.from_numpy(tone(1.0, 440.0) + tone(1.0, 1320.0, seed=1))
    window = torch.hann_window(400)
    magnitude = torch.stft(wave, 400, 160, window=window, return_complex=True).abs()

    def convergence(rebuilt):
        spec = torch.stft(torch.from_numpy(rebuilt), 400, 160, window=window, return_complex=True).abs()
        n = min(spec.shape[1], magnitude.shape[1])
        a, b = spec[:, :n] / spec[:, :n].norm(), magnitude[:, :n] / magnitude[:, :n].norm()
        return float((a - b).norm())

    random_phase, iterated = convergence(griffin_lim(magnitude, 0)), convergence(griffin_lim(magnitude, 32))
    assert iterated < 0.25 < random_phase


def test_codec_fits_residual_codebooks_each_lowering_the_error():
    config = AudioConfig(codebooks=3, codebook_size=8, unit_frames=4)
    codec = MelCodec(config)
    mels = [codec_log_mel(tone(0.5, hz, seed=k)) for k, hz in enumerate((300, 800, 2000, 3500))]
    report = codec.fit(mels, iterations=8)
    errors = report["mse_after_codebook"]
    assert errors[0] < report["variance"] and errors[2] < errors[1] < errors[0]
    codes = codec.encode(mels[2])
    assert codes.shape == (3, -(-mels[2].shape[1] // 4)) and int(codes.max()) < 8
    rebuilt = codec.decode(codes)[:, :mels[2].shape[1]]
    assert float((rebuilt - mels[2]).pow(2).mean()) < 0.5 * float((mels[0] - mels[2]).pow(2).mean())
    wave = codec.vocode(codes)
    assert wave.dtype == np.float32 and len(wave) > 0.4 * 16000
