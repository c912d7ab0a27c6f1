"""The dense building blocks of a Qwen3 decoder layer: RMSNorm, grouped-query attention, SwiGLU MLP.

Linears are bias-free except q/k/v under `attention_bias` (Qwen2); q/k RMSNorm is Qwen3's and off under
`qk_norm=False` (Qwen2, Llama). Parameter names are those of transformers' modules, so a state dict moves
between the two without renaming.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from minimind.config import ModelConfig
from minimind.model.cache import KVCache
from minimind.model.rope import apply_rope


def autocast_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype matmuls on x run in: autocast's where it is on for x's device, else x's own."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def one_compiled_cpu_row(x: torch.Tensor) -> bool:
    """x holds a single row (one token of one sequence) and is being traced by torch.compile on the CPU: there a
    product with a weight is best written as a multiply-reduce, which Inductor fuses into one loop over the
    weight (Linear, and the experts of an MoE layer)."""
    return x.numel() == x.shape[-1] and x.device.type == "cpu" and torch.compiler.is_compiling()


class Linear(nn.Linear):
    """nn.Linear (bias-free unless asked), optionally with a LoRA adapter (`minimind.lora`):

        y = x·Wᵀ [+ b] + (α/r) · dropout(x)·Aᵀ·Bᵀ        A [r, in], B [out, r]; W frozen, B = 0 at the start

    Under torch.compile on CPU with a single input row (decoding one token of one sequence), x·Wᵀ is computed
    as a multiply-reduce. Inductor turns that into one vectorised loop fused with the norms and adds around it.
    On the AMD CPU it streamed the weight at about twice the bandwidth of the BLAS matrix-vector product (23 vs
    12 GB/s); on the Xeon it beat oneDNN's bf16 one-row kernel but not MKL's fp32 one (docs/performance.md).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__(in_features, out_features, bias=bias)
        self.register_parameter("lora_A", None)
        self.register_parameter("lora_B", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if one_compiled_cpu_row(x):
            y = (x[..., None, :] * self.weight).sum(-1)
            if self.bias is not None:
                y = y + self.bias
        else:
            y = F.linear(x, self.weight, self.bias)
        if self.lora_A is not None:
            y = y + F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B) * self.lora_scale
        return y

    def add_lora(self, rank: int, alpha: float, dropout: float) -> None:
        """A ~ Kaiming-uniform (as PEFT), B = 0: the adapted layer starts equal to the base."""
        self.lora_A = nn.Parameter(self.weight.new_empty(rank, self.in_features))
        self.lora_B = nn.Parameter(self.weight.new_zeros(self.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=5 ** 0.5)
        self.lora_scale = alpha / rank
        self.lora_dropout = nn.Dropout(dropout) if dropout else nn.Identity()

    @torch.no_grad()
    def merge_lora(self) -> None:
        """W ← W + (α/r)·B·A, then drop the adapter (computed in fp32)."""
        delta = (self.lora_B.float() @ self.lora_A.float()) * self.lora_scale
        self.weight.copy_((self.weight.float() + delta).to(self.weight.dtype))
        self.lora_A = self.lora_B = None
        del self.lora_dropout


class RMSNorm(nn.Module):
    """y = w · x / sqrt(mean(x²) + eps), normalised in fp32 and cast back before the weight (as Qwen3).

    With rotary tables cos/sin [B or 1, T, d] (x [B, T, H, d], Qwen3's q/k norm), y is then rotated by RoPE.
    dtype: the output's (default: x's promoted with the weight's, as the formula gives). One formula
    (`norm_rope`) serves every path, so that a policy and its no-grad reference agree to the bit; in eager
    training it runs inside `_NormRope`, which adds a hand-written backward.
    """

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor, cos: torch.Tensor | None = None, sin: torch.Tensor | None = None,
                dtype: torch.dtype | None = None) -> torch.Tensor:
        dtype = dtype or torch.promote_types(x.dtype, self.weight.dtype)
        if torch.is_grad_enabled() and not torch.compiler.is_compiling():
            return _NormRope.apply(x, self.weight, self.eps, cos, sin, dtype)
        return norm_rope(x, self.weight, self.eps, cos, sin, dtype)[0]


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
    one pass over y instead of two (20–25% off the time of the q/k norm's forward and of its backward)."""
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


class Attention(nn.Module):
    """Causal grouped-query attention with per-head q/k RMSNorm (before RoPE; Qwen3): SDPA, or on the CPU in bf16
    training `matmul_attention`, one query over a cache `single_query_attention`, packed rows on a GPU flex attention.

    x [B, T, hidden] → q [B, H, T, d], k/v [B, H_kv, T, d] → out [B, T, hidden]; scale d^-0.5.
    The mask is a bool tensor (True = may attend), None (causal or full, by is_causal), or a flex-attention
    BlockMask for packed rows on a GPU (`transformer.document_block_mask`).
    """

    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv_heads, self.head_dim = (config.num_attention_heads, config.num_key_value_heads,
                                                        config.head_dim)
        hidden, q_dim, kv_dim = config.hidden_size, self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        self.q_proj = Linear(hidden, q_dim, config.attention_bias)
        self.k_proj = Linear(hidden, kv_dim, config.attention_bias)
        self.v_proj = Linear(hidden, kv_dim, config.attention_bias)
        self.o_proj = Linear(q_dim, hidden)
        norm = (lambda: RMSNorm(self.head_dim, config.rms_norm_eps)) if config.qk_norm else nn.Identity
        self.q_norm, self.k_norm = norm(), norm()

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                is_causal: bool, cache: KVCache | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        dtype = autocast_dtype(x)
        x = x.to(dtype)                     # cast once for q, k and v (autocast would cast x for each of them)
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if isinstance(self.q_norm, RMSNorm):               # rope in fp32 inside the norm, results in `dtype`
            q, k = self.q_norm(q, cos, sin, dtype), self.k_norm(k, cos, sin, dtype)
        else:
            q, k = apply_rope(q, cos, sin).to(dtype), apply_rope(k, cos, sin).to(dtype)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)          # all keys/values so far: [B, H_kv, S, d]
        if isinstance(mask, BlockMask):          # inside a compiled model, Dynamo fuses flex_attention itself
            flex = flex_attention if torch.compiler.is_compiling() else compiled_flex_attention()
            y = flex(q, k, v, block_mask=mask, enable_gqa=self.n_kv_heads != self.n_heads)
        elif T == 1 and cache is not None:
            y = single_query_attention(q, k, v, mask)
        elif cache is None and v.device.type == "cpu" and v.dtype == torch.bfloat16 and T <= MATMUL_ATTENTION_MAX_T:
            y = matmul_attention(q, k, v, mask)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                               enable_gqa=self.n_kv_heads != self.n_heads)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


def single_query_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
                           ) -> torch.Tensor:
    """Attention of one new query per row over its cached keys (decoding), as two batched matmuls:

        q [B, H, 1, d], k/v [B, H_kv, S, d], mask [B or 1, 1, 1, S] (True = may attend) → [B, H, 1, d]

    The H/H_kv query heads that share a key head are the rows of one matmul (no repeated keys); the softmax runs
    in fp32. SDPA's CPU kernels are tuned for many queries: for one query they measured 1.1× (fp32) to 8× (bf16)
    slower than this at batch 128 (docs/performance.md).
    """
    B, H, _, d = q.shape
    H_kv, S = k.shape[1], k.shape[2]
    scores = (q.to(k.dtype).view(B, H_kv, H // H_kv, d) @ k.transpose(-1, -2)).float() * d ** -0.5
    if mask is not None:
        scores = scores.masked_fill(~mask.view(mask.shape[0], 1, 1, S), float("-inf"))
    return (scores.softmax(dim=-1).to(v.dtype) @ v).view(B, H, 1, d)


@functools.cache
def compiled_flex_attention():
    """flex_attention compiled once per process, for eager models (uncompiled it computes the full T×T scores).
    Shapes are static: a training run's rows all have one length."""
    return torch.compile(flex_attention, dynamic=False)


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
    at least one key. On the CPU in bf16 this is 1.3–2.6× faster than SDPA's flash kernel, mostly in backward
    (docs/performance.md).
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
    block skips them; rounding keeps the matmul shapes few, so that oneDNN reuses its kernels (moe.py). A host
    read: this path runs on the CPU only, and not under torch.compile."""
    first = int(allowed.flatten(0, -2).any(dim=0).int().argmax())
    return first // MATMUL_ATTENTION_BLOCK * MATMUL_ATTENTION_BLOCK


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) · up(x))."""

    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_proj = Linear(hidden, intermediate)
        self.up_proj = Linear(hidden, intermediate)
        self.down_proj = Linear(intermediate, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(autocast_dtype(x))         # cast once for gate and up
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
