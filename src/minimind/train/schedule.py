"""The learning-rate schedule: linear warmup to the peak, then cosine or linear decay to a floor (or constant).

With W warmup steps, T total steps (steps 0 … T-1) and floor r = min_ratio, the multiplier of the peak lr is

    step < W:   m = (step + 1) / W                       (1/W at step 0, exactly 1 at step W-1)
    step ≥ W:   p = min(1, (step - W) / max(1, T-1-W))   (0 at step W, 1 at the last step T-1)
                cosine:    m = r + (1 - r) · (1 + cos(π·p)) / 2
                linear:    m = r + (1 - r) · (1 - p)
                constant:  m = 1

so the last step runs at exactly r·peak (when the decay phase has at least two steps; a single one runs at the
peak). Warmup has a fixed length: if T ≤ W the run ends inside it, below the peak and without decay. Steps past
T-1 stay at the floor.
"""

from __future__ import annotations

import math

import torch

from minimind.errors import MiniMindError


def lr_multiplier(step: int, total_steps: int, warmup_steps: int, decay: str, min_ratio: float) -> float:
    """The factor in (0, 1] that multiplies every group's base_lr at optimiser step `step` (0-based)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - 1 - warmup_steps))
    if decay == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if decay == "linear":
        return min_ratio + (1 - min_ratio) * (1 - progress)
    raise MiniMindError(f"unknown lr decay {decay!r}; expected cosine, linear or constant")


def set_lr(optimizers: list[torch.optim.Optimizer], multiplier: float) -> None:
    """lr = base_lr · multiplier in every param group (base_lr is the group's peak, set by build_optimizers)."""
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * multiplier
