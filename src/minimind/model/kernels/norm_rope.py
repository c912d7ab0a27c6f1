"""Fused RMSNorm (+ RoPE for q and k) with a hand-written backward, for eager training on the CPU.

Replaces `layers.RMSNorm` followed by `rope.apply_rope` (the q/k path of `layers.Attention`), and the autocast cast
of each block's attention and MLP input (`CastOnceBlock`). Justified by: on the CPU every op that mixes bf16 and
fp32 copies its bf16 input first; doing every op in fp32 and casting once, with a backward that needs no autograd
graph, took a residual norm from 3.7–4.2 to 2.2–2.6 ms and q's norm + RoPE from 6.7–7.1 to 5.4–5.6 ms at
minimind2-small's shapes, and adding the rotated term half by half took 20–25% more off (docs/performance.md,
"What makes the CPU path fast").
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from minimind.model.layers import RMSNorm, autocast_dtype
from minimind.model.moe import MoE
from minimind.model.transformer import Block


def swap_halves(x: torch.Tensor) -> torch.Tensor:
    """[..., d] → its two halves swapped: (x₂, x₁)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x2, x1), dim=-1)


def norm_rope(x, weight, eps, cos, sin, dtype):
    """RMSNorm, then RoPE if cos/sin are given, in fp32 (fp64 for fp64 x) with as few passes over x as eager PyTorch
    allows. Every op works in that one dtype: on the CPU an op that mixes bf16 and fp32 first copies its bf16 input.

        r = (mean(x²) + eps)^-½    n = x·r (rounded to x's dtype)    z = w ⊙ n
        y = z                                   (no rope)
        y = z ⊙ cos + rotate_half(z) ⊙ sin = n ⊙ a + swap(n) ⊙ b,   a = w ⊙ cos,  b = swap(w) ⊙ (−sin₁, sin₂)

    → (y in dtype, and for backward: n in x's dtype (exact: it was rounded to it), then r, w, cos and (−sin₁, sin₂)
    in the compute dtype; the last two None without rope).
    """
    d, c = x.shape[-1], torch.promote_types(x.dtype, torch.float32)          # c: the compute dtype
    x32, w = x.to(c), weight.to(c)
    r = torch.rsqrt(torch.linalg.vector_norm(x32, dim=-1, keepdim=True).square() / d + eps)
    n = n_rounded = x32 * r
    if x.dtype != c:
        n_rounded = n.to(x.dtype)
        n = n_rounded.to(c)
    if cos is None:
        return (n * w).to(dtype), n_rounded, r, w, None, None
    cos, sin = cos.to(c)[:, :, None], sin.to(c)[:, :, None]                 # [B or 1, T, 1, d]
    h = d // 2
    sin_signed = torch.cat((-sin[..., :h], sin[..., h:]), dim=-1)
    y = add_swapped(n * (w * cos), n, swap_halves(w) * sin_signed)
    return y.to(dtype), n_rounded, r, w, cos, sin_signed


def add_swapped(y: torch.Tensor, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """y += swap(x) ⊙ b in place, half by half (y₁ += x₂ ⊙ b₁, y₂ += x₁ ⊙ b₂), so that swap(x) is never built:
    one pass over y instead of two."""
    h = y.shape[-1] // 2                 # slices, not chunk: autograd allows in-place ops on a single view
    y[..., :h].addcmul_(x[..., h:], b[..., :h])
    y[..., h:].addcmul_(x[..., :h], b[..., h:])
    return y


class _NormRope(torch.autograd.Function):
    """`norm_rope` with a hand-written backward, from dy:

        u = dz = dy (no rope), or dy ⊙ cos + swap(dy ⊙ (−sin₁, sin₂))
        dw = Σ_rows u ⊙ n    dn = u ⊙ w    dx = r·(dn − n·mean(dn ⊙ n)),  with mean(dn ⊙ n) = (u ⊙ n)·w / d
    """

    @staticmethod
    def forward(ctx, x, weight, eps, cos, sin, dtype):
        y, n, r, w, cos, sin_signed = norm_rope(x, weight, eps, cos, sin, dtype)
        ctx.save_for_backward(n, r, w, *((cos, sin_signed) if cos is not None else ()))
        ctx.dtypes = x.dtype, weight.dtype
        return y

    @staticmethod
    @once_differentiable                     # the saved n and r carry no graph: no second derivative
    def backward(ctx, grad_y):
        n, r, w, *cos_sin = ctx.saved_tensors
        x_dtype, w_dtype = ctx.dtypes
        d = n.shape[-1]
        n, u = n.to(w.dtype), grad_y.to(w.dtype)
        if cos_sin:
            cos, sin_signed = cos_sin
            u = add_swapped(u * cos, u, swap_halves(sin_signed))
        un = u * n
        grad_w = un.flatten(0, -2).sum(0).to(w_dtype) if ctx.needs_input_grad[1] else None
        mean_dn_n = (un @ w).div_(-d).unsqueeze(-1)
        grad_x = torch.addcmul(u * w, n, mean_dn_n).mul_(r)
        return grad_x.to(x_dtype), grad_w, None, None, None, None


class FusedRMSNorm(RMSNorm):
    """RMSNorm through `norm_rope`: with cos/sin [B or 1, T, d] (x [B, T, H, d]) also rotated by RoPE; the output in
    `dtype` (default: x's promoted with the weight's). With gradients in eager mode it runs inside `_NormRope`;
    without them, or under torch.compile (which fuses the formula itself), the same formula runs plainly, so a
    policy and its no-grad reference agree to the bit."""

    def forward(self, x: torch.Tensor, cos: torch.Tensor | None = None, sin: torch.Tensor | None = None,
                dtype: torch.dtype | None = None) -> torch.Tensor:
        dtype = dtype or torch.promote_types(x.dtype, self.weight.dtype)
        if torch.is_grad_enabled() and not torch.compiler.is_compiling():
            return _NormRope.apply(x, self.weight, self.eps, cos, sin, dtype)
        return norm_rope(x, self.weight, self.eps, cos, sin, dtype)[0]


class CastOnceBlock(Block):
    """`Block` whose norms hand attention and the dense MLP their input already in the compute dtype, so autocast
    casts nothing per projection. The MoE router keeps the residual stream's dtype."""

    def forward(self, h, cos, sin, mask, is_causal, cache=None, token_mask=None, position_ids=None):
        dtype = autocast_dtype(h)
        h = h + self.mix(self.input_layernorm(h, dtype=dtype), cos, sin, mask, is_causal, cache, token_mask,
                         position_ids)
        if isinstance(self.mlp, MoE):
            y, aux = self.mlp(self.post_attention_layernorm(h), token_mask)
            return h + y, aux
        return h + self.mlp(self.post_attention_layernorm(h, dtype=dtype)), None
