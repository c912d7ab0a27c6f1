"""The LM head and cross-entropy fused, in row chunks: the loss of hidden states h [N, H] under head W [V, H]
without ever holding the logits of all N rows.

Replaces `Transformer.lm_loss` (`loss.cross_entropy_sum` on `lm_head(h)`). Justified by: minimind2-small at
8 × 256 on 2 threads went from 714 to 829 tokens/s in fp32 and from 1,037 to 1,243 in bf16; at 2048 rows it saves
52 MiB of bf16 logits and their fp32 copy, and with a 151k vocabulary at 16 × 2048, 30 GiB (docs/performance.md,
"What makes the CPU path fast").

For a chunk of rows c (targets y_n; -100 = not a target, weight 0):
    z      = h_c · Wᵀ                                 [c, V], in the autocast dtype, then fp32
    loss  += Σ_n valid_n · (logsumexp(z_n) - z_n,y_n)
    dz     = valid · (softmax(z) - onehot(y))           the gradient of that sum with respect to z
    dh_c   = dz · W        dW += dzᵀ · h_c

The gradients are computed in the forward pass, while the chunk's logits are at hand, and backward only scales
them by the incoming gradient (the loss is a scalar). Memory: one [c, V] fp32 chunk instead of [N, V] logits plus
their fp32 log-softmax kept for backward; time: no log-softmax backward, no copies of sliced logits. The same
trick as Liger-Kernel's fused linear cross-entropy, written with plain PyTorch ops.
"""

from __future__ import annotations

import torch

from minimind.model.layers import autocast_dtype
from minimind.model.loss import IGNORE_INDEX
from minimind.model.transformer import Transformer
from minimind.model.vlm import VisionLanguageModel

CHUNK_ELEMENTS = 2**24          # fp32 logits per chunk: 64 MiB, 2,621 rows of a 6,400-token vocabulary


class LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                compute_dtype: torch.dtype) -> torch.Tensor:
        need_h, need_w = ctx.needs_input_grad[:2]
        n, vocab = h.shape[0], weight.shape[0]
        rows = max(1, CHUNK_ELEMENTS // vocab)
        w = weight.to(compute_dtype)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        for start in range(0, n, rows):
            hc, yc = h[start:start + rows].to(compute_dtype), targets[start:start + rows]
            z = (hc @ w.T).float()                                          # [c, V]
            valid = (yc != IGNORE_INDEX).float()[:, None]
            y = yc.clamp(min=0)[:, None]
            z_target = z.gather(1, y)
            z_max = z.amax(-1, keepdim=True)
            e = z.sub_(z_max).exp_()                                        # exp(z - max), in place of z
            norm = e.sum(-1, keepdim=True)
            total += ((z_max + norm.log() - z_target) * valid).sum()        # logsumexp(z) - z_y
            if need_h or need_w:
                dz = e.mul_(valid / norm).scatter_add_(1, y, -valid)         # valid · (softmax - onehot)
                dz = dz.to(compute_dtype)
                if need_h:
                    grad_h[start:start + rows] = dz @ w
                if need_w:
                    if dz.dtype == torch.float32:
                        grad_w.addmm_(dz.T, hc)
                    else:
                        grad_w += dz.T @ hc
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        grad_h = grad_h * grad_total if grad_h is not None else None
        grad_w = (grad_w * grad_total).to(ctx.weight_dtype) if grad_w is not None else None
        return grad_h, grad_w, None, None


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Σ over targets != -100 of -log softmax(h·Wᵀ)[target]: h [..., H], weight [V, H], targets [...] → [] fp32.

    The matmuls run in the autocast dtype when autocast is on (as nn.Linear would), the softmax in fp32."""
    dtype = autocast_dtype(h)
    if not torch.is_grad_enabled():
        h, weight = h.detach(), weight.detach()          # so that forward computes no gradients
    with torch.autocast(h.device.type, enabled=False):
        return LinearCrossEntropy.apply(h.reshape(-1, h.shape[-1]), weight, targets.reshape(-1), dtype)


class FusedLossTransformer(Transformer):
    """`Transformer` whose training loss runs through `linear_cross_entropy`."""

    def lm_loss(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return linear_cross_entropy(h, self.lm_head.weight, targets)


class FusedLossVisionLanguageModel(VisionLanguageModel):
    """`VisionLanguageModel` whose training loss runs through `linear_cross_entropy`."""

    lm_loss = FusedLossTransformer.lm_loss
