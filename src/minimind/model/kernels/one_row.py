"""Decoding one token of one sequence under torch.compile on the CPU: products with a weight as multiply-reduces.

Replaces `Linear.product` (x·Wᵀ) and `MoE.run_experts` for a single input row. Justified by: Inductor turns a
multiply-reduce into one vectorised loop fused with the norms and adds around it, which streamed the weight at
about twice the bandwidth of the BLAS matrix-vector product on the first AMD CPU (23 vs 12 GB/s); for an MoE layer
the loop reads only the chosen experts' weights (docs/performance.md, decoding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minimind.model.layers import Linear, autocast_dtype
from minimind.model.moe import Experts


def one_compiled_cpu_row(x: torch.Tensor) -> bool:
    """x holds a single row (one token of one sequence) and is being traced by torch.compile on the CPU."""
    return x.numel() == x.shape[-1] and x.device.type == "cpu" and torch.compiler.is_compiling()


class OneRowLinear(Linear):
    """`Linear` whose x·Wᵀ is a multiply-reduce, (x[..., None, :] ⊙ W).sum(-1), for one compiled CPU row."""

    def product(self, x: torch.Tensor) -> torch.Tensor:
        if not one_compiled_cpu_row(x):
            return super().product(x)
        y = (x[..., None, :] * self.weight).sum(-1)
        return y + self.bias if self.bias is not None else y


def one_token_experts(experts: Experts, x: torch.Tensor, chosen: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """y = Σ_j w_j · SwiGLU_{e_j}(x) for one token x [1, hidden], chosen experts and weights [k] → [1, hidden] fp32,
    as multiply-reduces over the chosen experts' rows."""
    dtype = autocast_dtype(x)
    x = x.to(dtype)
    gate, up, down = (w[chosen].to(dtype) for w in (experts.gate_proj, experts.up_proj, experts.down_proj))
    h = F.silu((x[:, None, :] * gate).sum(-1)) * (x[:, None, :] * up).sum(-1)         # [k, I]
    y = (h[:, None, :] * down).sum(-1)                                                 # [k, hidden]
    return (y.float() * weights[:, None]).sum(0, keepdim=True)
