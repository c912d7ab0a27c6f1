"""The dense building blocks of a Qwen3 decoder layer, as plain PyTorch: Linear (with LoRA), RMSNorm, grouped-query
attention, SwiGLU MLP.

Linears are bias-free except q/k/v under `attention_bias` (Qwen2); q/k RMSNorm is Qwen3's and off under
`qk_norm=False` (Qwen2, Llama). Parameter names are those of transformers' modules, so a state dict moves
between the two without renaming. Faster versions of these modules live in `minimind.model.kernels`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from minimind.config import ModelConfig
from minimind.model.cache import KVCache
from minimind.model.rope import apply_rope


def autocast_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype matmuls on x run in: autocast's where it is on for x's device, else x's own."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


class Linear(nn.Linear):
    """nn.Linear (bias-free unless asked), optionally with a LoRA adapter (`minimind.lora`):

        y = x·Wᵀ [+ b] + (α/r) · dropout(x)·Aᵀ·Bᵀ        A [r, in], B [out, r]; W frozen, B = 0 at the start
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__(in_features, out_features, bias=bias)
        self.register_parameter("lora_A", None)
        self.register_parameter("lora_B", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.product(x)
        if self.lora_A is not None:
            y = y + F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B) * self.lora_scale
        return y

    def product(self, x: torch.Tensor) -> torch.Tensor:
        """x·Wᵀ [+ b]."""
        return F.linear(x, self.weight, self.bias)

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
    """y = w ⊙ x / sqrt(mean(x²) + eps)

    Normalised in fp32 (fp64 for fp64 x) and rounded back to x's dtype before the weight, as Qwen3 does; the
    output's dtype is then x's promoted with the weight's (fp32 under autocast).
    """

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.to(torch.promote_types(x.dtype, torch.float32))
        n = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * n.to(x.dtype)


class Attention(nn.Module):
    """Grouped-query attention with per-head q/k RMSNorm before RoPE (Qwen3):

        x [B, T, hidden] → q [B, H, T, d], k/v [B, H_kv, T, d]
        q, k ← rope(norm(q)), rope(norm(k))
        out = o_proj(softmax(q·kᵀ / √d + mask) · v)        → [B, T, hidden]

    The H / H_kv query heads of a group share one key/value head. mask: a bool tensor [B or 1, 1, T, S] (True =
    may attend), or None (causal when is_causal, else full); a sliding layer (`Block.window`) gets a banded mask.
    With a cache, k and v are appended to it and the queries attend to every cached position the mask allows.
    """

    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.causal = not config.is_diffusion       # a diffusion model's masks are not causal (kernels need to know)
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
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q = apply_rope(self.q_norm(q), cos, sin).to(v.dtype).transpose(1, 2)
        k = apply_rope(self.k_norm(k), cos, sin).to(v.dtype).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)          # all keys/values so far: [B, H_kv, S, d]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                           enable_gqa=self.n_kv_heads != self.n_heads)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) ⊙ up(x))."""

    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_proj = Linear(hidden, intermediate)
        self.up_proj = Linear(hidden, intermediate)
        self.down_proj = Linear(intermediate, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
