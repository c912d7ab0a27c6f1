"""The language-modelling loss and the per-token quantities every stage and evaluation reads off the logits.

    loss  = Σ_t [y_t ≠ -100] · −log softmax(z_t)[y_t]         z_t = h_t · W_headᵀ, in fp32
    logp_t = log p(x_t | x_<t)                                  (`token_logprobs`, aligned with the tokens)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def cross_entropy_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Σ over targets ≠ -100 of −log softmax(logits)[target]: logits [..., V], targets [...] → [] in fp32 (fp64
    for fp64 logits); 0 when nothing is a target."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.cross_entropy(logits.flatten(0, -2), targets.flatten(), ignore_index=IGNORE_INDEX,
                           reduction="sum")


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logits [B, T, V] of a sequence, labels [B, T] (its own ids, or -100 where not a target) → [B, T]:
    log p(labels[t] | tokens < t) in fp32, 0 where labels[t] is -100 and at t = 0 (nothing predicts it)."""
    targets = labels[:, 1:]
    logps = -F.cross_entropy(logits[:, :-1].float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX,
                             reduction="none").view_as(targets)
    return F.pad(logps, (1, 0))


@torch.no_grad()
def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """logits [B, T, V] → [B, T]: H_t = -Σ_v p log p of the distribution that predicted token t (0 at t = 0),
    aligned like `token_logprobs`; fp32, no gradient (a metric)."""
    logp = logits[:, :-1].float().log_softmax(-1)
    return F.pad(-(logp.exp() * logp).sum(-1), (1, 0))
