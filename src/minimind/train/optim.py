"""Optimizers: AdamW for everything, or Muon for the hidden matrices and AdamW for the rest.

Weight decay goes on matrices only: the projections, expert stacks and routers inside the blocks, and an untied
lm_head. It skips
- norm weights (1-D): decay would pull these gains towards 0 instead of their natural value 1;
- the embedding, and with it the tied lm_head (the same tensor): a row only gets a gradient when its token occurs,
  but decay shrinks every row on every step, so rare tokens' embeddings would fade away.

Every param group carries `base_lr`, its peak learning rate, which `schedule.set_lr` scales each step.
"""

from __future__ import annotations

import torch
from torch import nn

from minimind.errors import MiniMindError
from minimind.model import Transformer
from minimind.model.transformer import Backbone
from minimind.train.config import OptimConfig

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def param_groups(model: Transformer) -> dict[str, list[nn.Parameter]]:
    """Every parameter once (the tied head is the embedding), in one of three lists:

    hidden    matrices inside the blocks (ndim ≥ 2): attention and MLP projections, expert stacks
              [E, out, in], MoE routers                                      weight decay; Muon's share
    head      the untied lm_head (empty when tied)                           weight decay
    no_decay  the embedding (and tied head), norm weights
    Frozen parameters (a LoRA run's base) are left out; LoRA's A and B are hidden matrices. A model with several
    backbones (PPO's policy and critic) has the blocks of each in `hidden`, its scalar heads in `head`.
    """
    backbones = [m for m in model.modules() if isinstance(m, Backbone)]     # two in PPO's actor-critic pair
    hidden = list({id(p): p for b in backbones for p in b.layers.parameters()
                   if p.ndim >= 2 and p.requires_grad}.values())
    groups = {"hidden": hidden, "head": [], "no_decay": []}
    taken = {id(p) for p in hidden}
    embeddings = {id(b.embed_tokens.weight) for b in backbones}
    for p in model.parameters():
        if id(p) not in taken and p.requires_grad:
            groups["head" if p.ndim >= 2 and id(p) not in embeddings else "no_decay"].append(p)
    return groups


def build_optimizers(model: Transformer, cfg: OptimConfig, device_type: str) -> list[torch.optim.Optimizer]:
    """[AdamW] for optimizer=adamw; [AdamW, Muon] for optimizer=muon.

    AdamW (lr, betas, eps from cfg) has a decay group (weight_decay) and a no-decay group; it is fused where the
    device has fused kernels (cuda, mps, cpu), else multi-tensor (foreach). With muon, the hidden matrices (the
    MoE routers included: they are hidden matrices like any other) go to Muon at cfg.muon_lr with the same
    weight decay, and AdamW keeps the embedding, norms and an untied head.
    """
    if cfg.optimizer not in ("adamw", "muon"):
        raise MiniMindError(f"config key 'optim.optimizer' is {cfg.optimizer!r}; expected adamw or muon")
    groups = param_groups(model)
    muon = cfg.optimizer == "muon"
    decay = groups["head"] + ([] if muon else groups["hidden"])
    adamw_groups = [{"params": decay, "weight_decay": cfg.weight_decay, "base_lr": cfg.lr},
                    {"params": groups["no_decay"], "weight_decay": 0.0, "base_lr": cfg.lr}]
    adamw_groups = [g for g in adamw_groups if g["params"]]
    fused = device_type in ("cuda", "mps", "cpu") and all(
        p.device.type == device_type and p.is_floating_point() for g in adamw_groups for p in g["params"])
    optimizers = [torch.optim.AdamW(adamw_groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                                    fused=fused, foreach=not fused)]
    if muon:
        optimizers.append(Muon([{"params": groups["hidden"], "base_lr": cfg.muon_lr}], lr=cfg.muon_lr,
                               weight_decay=cfg.weight_decay))
    return optimizers


def orthogonalize(G: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """The nearest semi-orthogonal matrix to each matrix of G [..., rows, cols], approximately: U·Vᵀ for G = U·S·Vᵀ.

    Quintic Newton–Schulz iteration, in bf16 on cuda and fp32 elsewhere:
        X₀ = G / ‖G‖_F                      (all singular values ≤ 1)
        A = X·Xᵀ;  X ← a·X + (b·A + c·A²)·X  with (a, b, c) = (3.4445, -4.7750, 2.0315), `steps` times
    The coefficients favour speed over convergence: singular values that are not tiny next to the largest end up
    in roughly [0.7, 1.2], not exactly 1, which trains as well. The iteration runs on the wide orientation, so
    that A is the smaller Gram matrix.
    """
    a, b, c = NS_COEFFICIENTS
    X = G.to(torch.bfloat16 if G.is_cuda else torch.float32)
    tall = G.size(-2) > G.size(-1)
    if tall:
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        A = X @ X.mT
        X = a * X + (b * A + c * A @ A) @ X
    return X.mT if tall else X


class Muon(torch.optim.Optimizer):
    """Momentum SGD with an orthogonalised update, for hidden matrices (Keller Jordan, 2024).

    For a matrix W [rows, cols] with gradient G (a stack [E, rows, cols] is E independent matrices):
        B ← μ·B + (1-μ)·G                        momentum buffer
        U = (1-μ)·G + μ·B  if nesterov, else B
        W ← W·(1 - lr·λ) - lr·√max(1, rows/cols)·orthogonalize(U)
    λ is decoupled weight decay; the √ factor keeps the update's RMS alike for tall and wide matrices.
    """

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, weight_decay: float = 0.0,
                 nesterov: bool = True, ns_steps: int = 5):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov, ns_steps=ns_steps)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim < 2:
                    raise ValueError(f"Muon takes matrices (ndim ≥ 2), got a parameter of shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mu = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - mu)
                update = p.grad.lerp(buf, mu) if group["nesterov"] else buf
                scale = max(1.0, p.size(-2) / p.size(-1)) ** 0.5
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(orthogonalize(update, group["ns_steps"]), alpha=-lr * scale)
        return loss
