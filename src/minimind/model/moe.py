"""The mixture-of-experts MLP of Qwen3-MoE: softmax router, top-k experts, load-balancing loss.

For N tokens x [N, hidden] and E experts:
    p      = softmax(x · W_gateᵀ)                    [N, E], in fp32
    w, e   = topk(p, k)                              weights and expert ids [N, k]
    w      = w / Σ_k w           (if norm_topk_prob)
    y_n    = Σ_j w_nj · SwiGLU_{e_nj}(x_n)
Load-balancing loss (Switch Transformer), summed over MoE layers by the model:
    f_i    = fraction of tokens whose top-k includes expert i
    P_i    = mean router probability of expert i
    aux    = E · coef · Σ_i f_i · P_i                (= k·coef when routing is perfectly uniform)
Padding tokens (token_mask == 0) are left out of f and P.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from minimind.config import ModelConfig
from minimind.model.layers import autocast_dtype


@torch.library.custom_op("minimind::grouped_mm", mutates_args=())
def grouped_mm(a: torch.Tensor, b: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """F.grouped_mm as an op torch.compile does not look into: PyTorch's own shape function for it accepts only
    bf16, while its CPU kernel (and ours to use) takes fp32 too."""
    return F.grouped_mm(a, b, offs=offsets)


@grouped_mm.register_fake
def _(a: torch.Tensor, b: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    if b.ndim == 3:                                                         # [M, K] · [G, K, N] → [M, N]
        return a.new_empty(a.shape[0], b.shape[2])
    return a.new_empty(offsets.shape[0], a.shape[0], b.shape[1])           # [K, M] · [M, N] → [G, K, N]


class GroupedMatmul(torch.autograd.Function):
    """y[r] = x[r] · W_gᵀ for the rows r of group g, the groups being consecutive runs of rows: x [M, K],
    W [G, N, K], offsets [G] int32 (end row of each group; empty groups allowed) → y [M, N]. One grouped GEMM
    per pass, so the group sizes never leave the device:

        forward  y = x · W_gᵀ        backward  dx = dy · W_g,   dW_g = dy_gᵀ · x_g
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight, offsets)
        return grouped_mm(x, weight.transpose(1, 2), offsets)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        x, weight, offsets = ctx.saved_tensors
        grad_y = grad_y.contiguous()                # grouped GEMMs refuse broadcast (stride-0) gradients
        grad_x = grouped_mm(grad_y, weight, offsets) if ctx.needs_input_grad[0] else None
        grad_w = grouped_mm(grad_y.T, x, offsets) if ctx.needs_input_grad[1] else None
        return grad_x, grad_w, None


class Experts(nn.Module):
    """E SwiGLU experts stored as stacked matrices: gate/up [E, I, hidden], down [E, hidden, I].

    On disk each expert has its own tensors (`experts.{e}.gate_proj.weight`, as transformers saves them);
    `minimind.model.io` splits and stacks them.
    """

    def __init__(self, num_experts: int, hidden: int, intermediate: int):
        super().__init__()
        self.gate_proj = nn.Parameter(torch.empty(num_experts, intermediate, hidden))
        self.up_proj = nn.Parameter(torch.empty(num_experts, intermediate, hidden))
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden, intermediate))

    def forward(self, x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """x [M, hidden] holds the tokens grouped by expert, expert e's ending at row offsets[e] → [M, hidden].
        Computed in the autocast dtype when autocast is on (it does not reach grouped GEMMs by itself)."""
        dtype = autocast_dtype(x)
        x, gate, up, down = (t.to(dtype) for t in (x, self.gate_proj, self.up_proj, self.down_proj))
        h = F.silu(GroupedMatmul.apply(x, gate, offsets)) * GroupedMatmul.apply(x, up, offsets)
        return GroupedMatmul.apply(h, down, offsets)


class MoE(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.num_experts, self.top_k = config.num_experts, config.num_experts_per_tok
        self.norm_topk_prob, self.aux_coef = config.norm_topk_prob, config.router_aux_loss_coef
        self.gate = nn.Linear(config.hidden_size, config.num_experts, bias=False)     # the router
        self.experts = Experts(config.num_experts, config.hidden_size, config.moe_intermediate_size)

    def forward(self, x: torch.Tensor, token_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, hidden], token_mask [B, T] (1 = real token) → (y [B, T, hidden], aux loss [])."""
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        probs = self.gate(x).float().softmax(dim=-1)                        # [N, E]
        weights, experts = probs.topk(self.top_k, dim=-1)                   # [N, k]
        if self.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return self.run_experts(x, experts, weights).view(shape), self.aux_loss(probs, experts, token_mask)

    def run_experts(self, x: torch.Tensor, experts: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """x [N, hidden], the chosen experts and their weights [N, k] → y [N, hidden]:  y_n = Σ_j w_nj · SwiGLU_e(x_n).

        The N·k (token, expert) assignments are sorted by expert, every expert runs on its rows in one grouped
        GEMM, and the weighted outputs are added back to their tokens. Group sizes stay on the device: no host
        sync."""
        grouped, order = experts.flatten().sort(stable=True)               # [N·k] expert ids, ascending
        token = order // self.top_k
        # index_select, not x[token]: its backward is an index_add, several times faster on CPU than the
        # accumulating index_put that advanced indexing differentiates into.
        rows = x.index_select(0, token)
        y = self.grouped_experts(rows, grouped) * weights.flatten().index_select(0, order)[:, None]
        return torch.zeros_like(x).index_add_(0, token, y.to(x.dtype))

    def grouped_experts(self, rows: torch.Tensor, grouped: torch.Tensor) -> torch.Tensor:
        """rows [M, hidden] sorted by their expert, grouped [M] (those experts, ascending) → each row through its
        expert's SwiGLU [M, hidden]."""
        ids = torch.arange(self.num_experts, device=rows.device, dtype=grouped.dtype)
        offsets = torch.searchsorted(grouped, ids, right=True).to(torch.int32)        # end row of each group
        return self.experts(rows, offsets)

    def aux_loss(self, probs: torch.Tensor, experts: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor:
        chosen = F.one_hot(experts, self.num_experts).sum(dim=1).float()   # [N, E], 1 where expert in top-k
        if token_mask is None:
            f, P = chosen.mean(dim=0), probs.mean(dim=0)
        else:
            m = token_mask.reshape(-1, 1).float()
            n = m.sum().clamp(min=1)
            f, P = (chosen * m).sum(dim=0) / n, (probs * m).sum(dim=0) / n
        return self.num_experts * self.aux_coef * (f * P).sum()
