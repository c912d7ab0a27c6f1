"""Training-time attention on the CPU in bf16: batched matmuls over blocks of query rows, with a hand-written
backward.

Replaces `F.scaled_dot_product_attention` in `layers.Attention` for bf16 on the CPU without a cache, T ≤ 2048.
Justified by: SDPA's CPU flash kernel spends most of its time in backward; per minimind2-small layer, forward and
backward, this took 23 vs 53–60 ms at 8 × 256 and 155–174 vs 224–375 ms at 2 × 2048 (1.3–2.6×), and with packed
documents skipping the key blocks before a block's documents took minimind-3 at 2 × 2048 from 981–1,049 to
1,226–1,318 tokens/s (docs/performance.md, "What makes the CPU path fast").
"""

from __future__ import annotations

import functools

import torch
from torch.autograd.function import once_differentiable

MATMUL_ATTENTION_MAX_T = 2048      # measured up to here; beyond, SDPA's flash kernel keeps memory linear in T
MATMUL_ATTENTION_BLOCK = 128       # query rows per block: block i attends only to keys before its end


class _MatmulAttention(torch.autograd.Function):
    """Attention as batched matmuls over blocks of query rows, with the probabilities kept for backward (bf16 on
    the CPU). For the block of rows [s, e), which attends to keys [f, e):

        S = (q·d^-½)·kᵀ + bias (0 or -inf)   P = softmax(S)   O = P·v
        dV += Pᵀ·dO   dP = dO·vᵀ   dS = P ⊙ (dP − rowsum(dP ⊙ P))   dQ = d^-½·dS·k   dK += dSᵀ·(q·d^-½)

    The H/H_kv query heads that share a key head are stacked as the rows of one matmul, q [B, H_kv, G·rows, d]:
    no key or value is repeated, and dK, dV sum over the group inside the matmul. The softmax and its backward
    are each one fused pass over P. Blocks write their rows of O (and of dQ) straight into a [B, T, H, d] buffer,
    the layout o_proj reads, and add into dK and dV in place: no concatenation, no per-block gradient of a slice.
    """

    @staticmethod
    def forward(ctx, q, k, v, mask, blocks):
        B, H, T, d = q.shape
        H_kv = k.shape[1]
        G = H // H_kv
        out = q.new_empty(B, T, H, d)
        saved = []
        for s, e, f in blocks:
            qb = (q[:, :, s:e] * d ** -0.5).reshape(B, H_kv, G * (e - s), d)
            scores = (qb @ k[:, :, f:e].transpose(-1, -2)).view(B, H_kv, G, e - s, e - f)
            add_block_bias(scores, mask, s, e, f)
            p = torch.softmax(scores, dim=-1).view(B, H_kv, G * (e - s), e - f)
            o = (p @ v[:, :, f:e]).view(B, H_kv, G, e - s, d)
            out[:, s:e].view(B, e - s, H_kv, G, d).copy_(o.permute(0, 3, 1, 2, 4))
            saved += [qb, p]
        ctx.save_for_backward(k, v, *saved)
        ctx.blocks = blocks
        return out.transpose(1, 2)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        k, v, *saved = ctx.saved_tensors
        B, H, T, d = grad_out.shape
        H_kv = k.shape[1]
        G = H // H_kv
        grad_q = grad_out.new_empty(B, T, H, d)
        grad_k, grad_v = torch.zeros_like(k), torch.zeros_like(v)
        for (s, e, f), qb, p in zip(ctx.blocks, saved[0::2], saved[1::2], strict=True):
            do = grad_out[:, :, s:e].reshape(B, H_kv, G * (e - s), d)
            grad_v[:, :, f:e] += p.transpose(-1, -2) @ do
            ds = torch._softmax_backward_data(do @ v[:, :, f:e].transpose(-1, -2), p, -1, p.dtype)
            grad_k[:, :, f:e] += ds.transpose(-1, -2) @ qb
            dq = (ds @ k[:, :, f:e]).view(B, H_kv, G, e - s, d).permute(0, 3, 1, 2, 4)
            grad_q[:, s:e].view(B, e - s, H_kv, G, d).copy_(dq)
        return grad_q.mul_(d ** -0.5).transpose(1, 2), grad_k, grad_v, None, None


def causal_bias(rows: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[rows, rows]: 0 on and below the diagonal, -inf above."""
    return torch.full((rows, rows), float("-inf"), dtype=dtype, device=device).triu(1)


_cached_causal_bias = functools.cache(causal_bias)   # eager only: Dynamo warns about, and ignores, a cache wrapper


def add_block_bias(scores: torch.Tensor, mask: torch.Tensor | None, s: int, e: int, f: int) -> None:
    """Mask the scores [B, H_kv, G, e-s, e-f] of query rows [s, e) over keys [f, e) in place, as an added bias
    (0 or -inf: a plain add, several times faster on the CPU than masked_fill with a broadcast bool mask).
    mask None is causal: only the last e-s keys, the diagonal square, hold masked entries."""
    if mask is None:
        bias = causal_bias if torch.compiler.is_compiling() else _cached_causal_bias
        scores[..., s - f:] += bias(e - s, scores.dtype, scores.device)
    else:
        allowed = mask[:, :, None, s:e, f:e]                        # [B or 1, 1, 1, e-s, e-f]
        scores += torch.zeros(allowed.shape, dtype=scores.dtype, device=scores.device).masked_fill_(
            ~allowed, float("-inf"))


def matmul_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Training-time attention without a cache, through `_MatmulAttention`, in blocks of query rows:

        q [B, H, T, d], k/v [B, H_kv, T, d], mask [B or 1, 1, T, T] (True = may attend; None = causal) → [B, H, T, d]
        (the output is a transposed view of a [B, T, H, d] tensor, so that o_proj's input needs no copy)

    The mask must be causal (the model's padding and document masks are), so the block of rows [s, e) needs only
    the keys before e: blocks of 128 rows skip about half of the T×T square at T = 2048. Every row must be allowed
    at least one key.
    """
    T = q.shape[2]
    trim = mask is not None and not torch.compiler.is_compiling()
    blocks = []
    for s in range(0, T, MATMUL_ATTENTION_BLOCK):
        e = min(s + MATMUL_ATTENTION_BLOCK, T)
        blocks.append((s, e, first_key_block(mask[..., s:e, :e]) if trim else 0))
    return _MatmulAttention.apply(q, k, v, mask, blocks)


def first_key_block(allowed: torch.Tensor) -> int:
    """The first key any of these query rows may attend to, rounded down to a multiple of the block: allowed
    [..., rows, S] bool → a host int. With packed documents the keys before it are masked for every row, so a
    block skips them; rounding keeps the matmul shapes few, so that oneDNN reuses its kernels (moe_padding.py). A host
    read: this path runs on the CPU only, and not under torch.compile."""
    first = int(allowed.flatten(0, -2).any(dim=0).int().argmax())
    return first // MATMUL_ATTENTION_BLOCK * MATMUL_ATTENTION_BLOCK
