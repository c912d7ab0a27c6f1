"""The fused RMSNorm + RoPE (`FusedRMSNorm`, `_NormRope`) against autograd and against the reference formula."""

import pytest
import torch

from minimind.model.kernels.norm_rope import FusedRMSNorm
from minimind.model.layers import RMSNorm
from minimind.model.rope import apply_rope


@pytest.mark.parametrize("rope", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_fused_norm_and_rope_backward_equals_autograd(dtype, rope, monkeypatch):
    """RMSNorm's eager training path (`_NormRope`, a hand-written backward) against autograd through the same
    formula (the path torch.compile traces) and, in float64, against Qwen3's formula written out, with q/k's rope
    or without: float64, so that a wrong backward cannot hide in rounding, and bf16 input as under autocast (the
    norm rounded to bf16 before the weight), output in bf16. Without gradients the output is the same to the bit,
    so that a policy and its no-grad reference agree exactly."""
    torch.manual_seed(0)
    B, T, H, d = 2, 5, 3, 8
    x = torch.randn(B, T, H, d, dtype=torch.float64).to(dtype).requires_grad_()
    norm = FusedRMSNorm(d, 1e-6).to(torch.float64 if dtype == torch.float64 else torch.float32)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    freqs = torch.randn(1, T, d // 2, dtype=torch.float64)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = (emb.cos(), emb.sin()) if rope else (None, None)
    grad_y = torch.randn(B, T, H, d, dtype=torch.float64).to(dtype)
    results = []
    for compiling in (False, True):
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda compiling=compiling: compiling)
        y = norm(x, cos, sin, dtype)
        assert y.dtype == dtype
        results.append((y, *torch.autograd.grad(y, (x, norm.weight), grad_y)))
    with torch.no_grad():
        assert torch.equal(norm(x, cos, sin, dtype), results[0][0])
    if dtype == torch.float64:
        plain = RMSNorm(d, 1e-6).to(torch.float64)
        plain.weight = norm.weight
        want = apply_rope(plain(x), cos, sin) if rope else plain(x)
        torch.testing.assert_close(results[0][0], want, atol=1e-12, rtol=1e-12)
    tolerance = dict(atol=1e-10, rtol=1e-10) if dtype == torch.float64 else dict(atol=2e-2, rtol=2e-2)
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got.double(), want.double(), **tolerance)
