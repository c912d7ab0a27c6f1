"""Attention with the fast paths: which routine attends, chosen from the tensors at hand.

Replaces `layers.Attention.forward`. Per call, one of:
    flex attention        the mask is a BlockMask (packed rows on a GPU; `flex_attention.py`)
    one query             T = 1 with a cache (decoding; `decode_attention.py`)
    blocked matmuls       bf16 on the CPU without a cache, T ≤ 2048, causal masks (training; `matmul_attention.py`)
    SDPA                  everything else, as in the reference
q and k go through `FusedRMSNorm` with RoPE inside (`norm_rope.py`); x is cast once for q, k and v.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask

from minimind.model.cache import KVCache
from minimind.model.kernels import matmul_attention as blocked
from minimind.model.kernels.decode_attention import single_query_attention
from minimind.model.kernels.flex_attention import flex_attend
from minimind.model.kernels.norm_rope import FusedRMSNorm
from minimind.model.layers import Attention, autocast_dtype
from minimind.model.rope import apply_rope


class FastAttention(Attention):
    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | BlockMask | None,
                is_causal: bool, cache: KVCache | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        dtype = autocast_dtype(x)
        x = x.to(dtype)                     # cast once for q, k and v (autocast would cast x for each of them)
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if isinstance(self.q_norm, FusedRMSNorm):           # rope in fp32 inside the norm, results in `dtype`
            q, k = self.q_norm(q, cos, sin, dtype), self.k_norm(k, cos, sin, dtype)
        else:
            q, k = apply_rope(self.q_norm(q), cos, sin).to(dtype), apply_rope(self.k_norm(k), cos, sin).to(dtype)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)          # all keys/values so far: [B, H_kv, S, d]
        if isinstance(mask, BlockMask):
            y = flex_attend(q, k, v, mask)
        elif T == 1 and cache is not None:
            y = single_query_attention(q, k, v, mask)
        elif (cache is None and self.causal and v.device.type == "cpu" and v.dtype == torch.bfloat16
              and T <= blocked.MATMUL_ATTENTION_MAX_T):
            y = blocked.matmul_attention(q, k, v, mask)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                               enable_gqa=self.n_kv_heads != self.n_heads)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))
