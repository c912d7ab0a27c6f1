"""Attention of one new query per row over its cached keys (decoding), as two batched matmuls.

Replaces `F.scaled_dot_product_attention` in `layers.Attention` when T = 1 with a cache. Justified by: SDPA's CPU
kernels are tuned for many queries; at batch 128 on 2 threads one query took 1.1 vs 1.0 ms (fp32) and 5.4–8.9 vs
0.6–1.2 ms (bf16) per call (docs/performance.md, "What makes the CPU path fast", decoding).
"""

from __future__ import annotations

import torch


def single_query_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
                           ) -> torch.Tensor:
    """q [B, H, 1, d], k/v [B, H_kv, S, d], mask [B or 1, 1, 1, S] (True = may attend) → [B, H, 1, d]:
    softmax(q·kᵀ/√d) · v with the softmax in fp32. The H/H_kv query heads that share a key head are the rows of one
    matmul (no repeated keys)."""
    B, H, _, d = q.shape
    H_kv, S = k.shape[1], k.shape[2]
    scores = (q.to(k.dtype).view(B, H_kv, H // H_kv, d) @ k.transpose(-1, -2)).float() * d ** -0.5
    if mask is not None:
        scores = scores.masked_fill(~mask.view(mask.shape[0], 1, 1, S), float("-inf"))
    return (scores.softmax(dim=-1).to(v.dtype) @ v).view(B, H, 1, d)
