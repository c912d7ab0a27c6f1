"""Gated DeltaNet (Yang et al. 2024; the linear-attention layer of Qwen3-Next and Qwen3.5), in plain PyTorch.

Per head, a matrix state S [d_k, d_v] replaces the growing KV cache. For each token t, with q, k L2-normalised
and q scaled by 1/√d_k:

    S_t = exp(g_t) · S_{t-1} · (I − β_t k_t k_tᵀ) + β_t k_t v_tᵀ        (decay, then the delta rule's correction)
    o_t = S_tᵀ q_t
    β_t = σ(b_t),   g_t = −exp(A_log) · softplus(a_t + dt_bias)        (both per value head, from the token)

The layer (transformers' `Qwen3_5GatedDeltaNet`, the same parameter names): in_proj_qkv → a causal depthwise
convolution of width `linear_conv_kernel_dim` with SiLU → q, k, v heads; in_proj_z, in_proj_b, in_proj_a → the
output gate, β and g; the output is RMSNorm(o)·SiLU(z) per head, then out_proj.

Two forms of the same recurrence: `recurrent_delta_rule` (token by token: decoding, and the reference) and
`chunked_delta_rule` (chunks of 64 tokens: within a chunk the updates are solved at once as a triangular system, the
WY/UT form of DeltaNet; across chunks the state is carried), tested equal. The decoding cache of a layer is its
state S and the last kernel−1 inputs of the convolution: a fixed size, whatever the context.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from minimind.config import ModelConfig
from minimind.model.layers import Linear


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


def recurrent_delta_rule(q, k, v, g, beta, state=None):
    """q, k [B, T, H, d_k], v [B, T, H, d_v], g, beta [B, T, H] (q, k already normalised and q scaled) → (o [B, T, H,
    d_v], the final state [B, H, d_k, d_v]), all fp32, one token at a time."""
    B, T, H, dk = k.shape
    S = q.new_zeros(B, H, dk, v.shape[-1]) if state is None else state.float()
    out = []
    for t in range(T):
        S = S * g[:, t].exp()[..., None, None]
        correction = (v[:, t] - (S * k[:, t, ..., None]).sum(-2)) * beta[:, t, :, None]     # β(v − Sᵀk)
        S = S + k[:, t, ..., None] * correction[..., None, :]
        out.append((S * q[:, t, ..., None]).sum(-2))
    return torch.stack(out, 1), S


def chunked_delta_rule(q, k, v, g, beta, state=None, chunk: int = 64):
    """`recurrent_delta_rule` computed a chunk at a time (the same arguments and results). Within a chunk of C
    tokens, with Γ_ij = exp(Σ_{j<s≤i} g_s) for j ≤ i (else 0), the corrections U solve the unit lower-triangular
    system (I + tril(diag(β) K Kᵀ ⊙ Γ, −1)) U = diag(β)(V − diag(exp(G)) K S₀ ), and then
        O = diag(exp(G)) Q S₀ + (Q Kᵀ ⊙ Γ) U,     S_C = exp(G_C) S₀ + (exp(G_C − G) ⊙ K)ᵀ U
    where G is the running sum of g inside the chunk."""
    B, T, H, dk = k.shape
    dv = v.shape[-1]
    pad = (chunk - T % chunk) % chunk
    q, k, v = (F.pad(x, (0, 0, 0, 0, 0, pad)).transpose(1, 2) for x in (q, k, v))       # [B, H, T', d]
    g, beta = (F.pad(x, (0, 0, 0, pad)).transpose(1, 2) for x in (g, beta))              # [B, H, T']
    n = q.shape[2] // chunk
    q, k, v = (x.reshape(B, H, n, chunk, -1) for x in (q, k, v))
    g, beta = g.reshape(B, H, n, chunk), beta.reshape(B, H, n, chunk)
    G = g.cumsum(-1)                                                                      # [B, H, n, C]
    lower = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
    gamma = (G[..., :, None] - G[..., None, :]).masked_fill(~lower, float("-inf")).exp()  # Γ_ij, 0 above the diagonal
    kb = k * beta[..., None]
    system = torch.eye(chunk, device=q.device) + (kb @ k.transpose(-1, -2) * gamma).tril(-1)
    attend = q @ k.transpose(-1, -2) * gamma
    S = q.new_zeros(B, H, dk, dv) if state is None else state.float()
    out = []
    for i in range(n):
        decay = G[:, :, i].exp()[..., None]                                              # exp(G_t) [B, H, C, 1]
        rhs = beta[:, :, i, :, None] * (v[:, :, i] - decay * (k[:, :, i] @ S))
        U = torch.linalg.solve_triangular(system[:, :, i], rhs, upper=False, unitriangular=True)
        out.append(decay * (q[:, :, i] @ S) + attend[:, :, i] @ U)
        last = G[:, :, i, -1:]                                                            # G_C [B, H, 1]
        S = last.exp()[..., None] * S + ((last - G[:, :, i]).exp()[..., None] * k[:, :, i]).transpose(-1, -2) @ U
    o = torch.cat(out, 2)[:, :, :T].transpose(1, 2)
    return o, S


class GatedRMSNorm(nn.Module):
    """y = w ⊙ x / sqrt(mean(x²) + eps) ⊙ SiLU(z), normalised in fp32 (transformers' Qwen3_5RMSNormGated)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)).to(dtype)
        return (x * F.silu(z.float())).to(dtype)


class GatedDeltaNet(nn.Module):
    """The linear-attention layer: x [B, T, hidden] → [B, T, hidden] (see the module docstring)."""

    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.k_heads, self.v_heads = config.linear_num_key_heads, config.linear_num_value_heads
        self.dk, self.dv = config.linear_key_head_dim, config.linear_value_head_dim
        key_dim, value_dim = self.k_heads * self.dk, self.v_heads * self.dv
        self.conv_dim = 2 * key_dim + value_dim
        self.kernel = config.linear_conv_kernel_dim
        self.in_proj_qkv = Linear(config.hidden_size, self.conv_dim)
        self.in_proj_z = Linear(config.hidden_size, value_dim)
        self.in_proj_b = Linear(config.hidden_size, self.v_heads)
        self.in_proj_a = Linear(config.hidden_size, self.v_heads)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, self.kernel, groups=self.conv_dim, bias=False,
                                padding=self.kernel - 1)
        self.dt_bias = nn.Parameter(torch.ones(self.v_heads))
        self.A_log = nn.Parameter(torch.log(torch.linspace(1.0, 16.0, self.v_heads)))
        self.norm = GatedRMSNorm(self.dv, config.rms_norm_eps)
        self.out_proj = Linear(value_dim, config.hidden_size)

    def forward(self, x: torch.Tensor, token_mask: torch.Tensor | None = None, cache=None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, T, hidden]; token_mask [B, T] (0 = padding: its input is zeroed, so it leaves no trace); packed
        rows (position_ids) run each document on its own; with a cache, the state and the convolution's tail
        carry over from the positions before (one token: the recurrent form)."""
        if position_ids is not None:
            return self._per_document(x, position_ids)
        if token_mask is not None:
            x = x * token_mask[..., None].to(x.dtype)
        B, T, _ = x.shape
        mixed = self.in_proj_qkv(x).transpose(1, 2)                               # [B, conv_dim, T]
        state = tail = None
        if cache is not None:
            tail, state = cache.linear_state(self.layer_idx)
            mixed = torch.cat([tail.to(mixed.dtype), mixed], -1)                  # the last kernel−1 inputs first
            tail = mixed[..., mixed.shape[-1] - (self.kernel - 1):]
            mixed = F.silu(F.conv1d(mixed, self.conv1d.weight, groups=self.conv_dim))
        else:
            mixed = F.silu(self.conv1d(mixed)[..., :T])
        q, k, v = mixed.transpose(1, 2).split([self.k_heads * self.dk, self.k_heads * self.dk, self.v_heads * self.dv],
                                              -1)
        q, k = (l2norm(t.reshape(B, T, self.k_heads, self.dk).float()) for t in (q, k))
        repeat = self.v_heads // self.k_heads
        q, k = q.repeat_interleave(repeat, 2) * self.dk ** -0.5, k.repeat_interleave(repeat, 2)
        v = v.reshape(B, T, self.v_heads, self.dv).float()
        beta = self.in_proj_b(x).float().sigmoid()
        g = -self.A_log.float().exp() * F.softplus(self.in_proj_a(x).float() + self.dt_bias)
        rule = recurrent_delta_rule if T == 1 else chunked_delta_rule
        o, state = rule(q, k, v, g, beta, state)
        if cache is not None:
            cache.save_linear_state(self.layer_idx, tail, state)
        z = self.in_proj_z(x).reshape(B, T, self.v_heads, self.dv)
        o = self.norm(o.to(z.dtype), z)
        return self.out_proj(o.reshape(B, T, -1))

    def _per_document(self, x: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """Packed rows: each document (position_ids restarting at 0) through the layer alone."""
        out = torch.empty_like(x)
        for b in range(x.shape[0]):
            starts = (position_ids[b] == 0).nonzero()[:, 0].tolist() + [x.shape[1]]
            for s, e in zip(starts[:-1], starts[1:], strict=True):
                out[b:b + 1, s:e] = self.forward(x[b:b + 1, s:e]).to(out.dtype)
        return out
