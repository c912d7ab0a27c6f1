import math

import pytest
import torch

from minimind import preset
from minimind.config import yarn
from minimind.model.rope import apply_rope, rope_frequencies


def test_default_frequencies():
    c = preset("minimind-3")
    inv_freq, factor = rope_frequencies(c)
    expected = [c.rope_theta ** (-2 * i / 96) for i in range(48)]
    assert factor == 1.0
    torch.testing.assert_close(inv_freq, torch.tensor(expected, dtype=torch.float32))


def test_yarn_frequencies_match_the_formula():
    """minimind-3 (d=96, θ=1e6) with the reference's YaRN block: factor 16 over 2048 positions."""
    c = preset("minimind-3").replace(rope_scaling=yarn(16, 2048))
    inv_freq, factor = rope_frequencies(c)
    d, theta, s, L = 96, 1e6, 16, 2048

    def dim(beta):
        return d * math.log(L / (2 * math.pi * beta)) / (2 * math.log(theta))

    low, high = max(math.floor(dim(32)), 0), min(math.ceil(dim(1)), d - 1)
    assert (low, high) == (8, 21)                       # the values the reference's notes derive
    for i in range(d // 2):
        f = theta ** (-2 * i / d)
        gamma = min(max((i - low) / (high - low), 0), 1)
        assert inv_freq[i].item() == pytest.approx(f * (1 - gamma) + f / s * gamma, rel=1e-6)
    assert inv_freq[0].item() == pytest.approx(1.0)     # fastest dimension kept
    assert inv_freq[-1].item() == pytest.approx(theta ** (-(d - 2) / d) / s, rel=1e-6)   # slowest interpolated
    assert factor == pytest.approx(0.1 * math.log(16) + 1)


def test_yarn_explicit_attention_factor():
    c = preset("tiny").replace(rope_scaling=yarn(4, 256) | {"attention_factor": 1.0})
    assert rope_frequencies(c)[1] == 1.0


def test_rotation_preserves_norm_and_relative_position():
    torch.manual_seed(0)
    c = preset("tiny")
    inv_freq, _ = rope_frequencies(c)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def rotate(x, pos):
        emb = torch.cat([pos * inv_freq, pos * inv_freq])[None, None]
        return apply_rope(x, emb.cos(), emb.sin())

    torch.testing.assert_close(rotate(q, 7).norm(), q.norm())
    # <R(m)q, R(n)k> depends only on m - n
    a = (rotate(q, 10) * rotate(k, 3)).sum()
    b = (rotate(q, 107) * rotate(k, 100)).sum()
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
