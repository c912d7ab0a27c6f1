"""RL math on tensors: advantages and per-token policy losses (notation of docs/rl.md).

    ρ_t = exp(logπ_θ(a_t) - logπ_old(a_t))        the importance ratio of token t
    GRPO advantage of sample i in group g:  A_i = (r_i - mean_g r) / (std_g r + ε)   (no std scaling: r_i - mean_g r)
    clip (PPO/GRPO/DAPO):  ℓ_t = -min(ρ_t·A, clip(ρ_t, 1-ε_low, 1+ε_high)·A)
    cispo (MiniMax-M1):    ℓ_t = -sg(min(ρ_t, 1+ε_high_is))·A·logπ_θ(a_t)
    k3 KL estimator:       k3_t = exp(logπ_ref - logπ_θ) - (logπ_ref - logπ_θ) - 1     (≥ 0, unbiased: KL(π_θ‖π_ref))

Aggregation turns per-token losses ℓ [B, T] with a completion mask m into a sum and a unit count, so that the
trainer's Σ / count is the chosen mean over the whole optimiser step:

    token    Σ_t ℓ·m                      / Σ m                 every token weighs the same (DAPO)
    sequence Σ_i (Σ_t ℓ·m / Σ_t m)        / number of sequences each sequence weighs the same (GRPO paper)
    constant Σ_t ℓ·m                      / (sequences · max_new_tokens)    Dr. GRPO: no length bias
"""

from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, group_size: int, scale_std: bool = True,
                     eps: float = 1e-4) -> torch.Tensor:
    """rewards [N·G] (groups contiguous) → advantages [N·G]: minus the group mean, over the group std
    (unbiased, as TRL) when scale_std."""
    groups = rewards.view(-1, group_size)
    centred = groups - groups.mean(dim=1, keepdim=True)
    if scale_std:
        centred = centred / (groups.std(dim=1, keepdim=True) + eps)
    return centred.reshape(-1)


def policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, kind: str = "clip",
                eps_low: float = 0.2, eps_high: float = 0.2, cispo_eps_high: float = 5.0
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token losses and whether each token's ratio was clipped, both [B, T]. advantages broadcast against
    logps ([B, 1] per sequence, or [B, T] per token)."""
    ratio = torch.exp(logps - old_logps)
    if kind == "clip":
        clipped_ratio = ratio.clamp(1 - eps_low, 1 + eps_high)
        loss = -torch.minimum(ratio * advantages, clipped_ratio * advantages)
        clipped = (ratio * advantages) > (clipped_ratio * advantages)
    elif kind == "cispo":
        weight = ratio.clamp(max=1 + cispo_eps_high).detach()
        loss = -weight * advantages * logps
        clipped = ratio > 1 + cispo_eps_high
    else:
        raise ValueError(f"unknown policy loss {kind!r}")
    return loss, clipped


def k3(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """The k3 estimator of KL(π_θ ‖ π_ref) per token (Schulman): e^x - x - 1 with x = logπ_ref - logπ_θ."""
    x = ref_logps - logps
    return torch.exp(x) - x - 1


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, mode: str, max_new_tokens: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ to be divided by the step's unit count, the units of this batch) — see the module docstring."""
    mask = mask.to(per_token.dtype)
    if mode == "token":
        return (per_token * mask).sum(), mask.sum()
    if mode == "sequence":
        lengths = mask.sum(dim=1)
        return ((per_token * mask).sum(dim=1) / lengths.clamp(min=1)).sum(), (lengths > 0).sum().to(mask.dtype)
    if mode == "constant":
        return (per_token * mask).sum(), (mask.sum(dim=1) > 0).sum().to(mask.dtype) * max_new_tokens
    raise ValueError(f"unknown aggregation {mode!r}")


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over each row's masked tokens, all [B, T]: with t+1 the row's next masked
    token after t,

        δ_t = r_t + γ·V_{t+1} - V_t   (V after the last masked token = 0),   A_t = δ_t + γλ·A_{t+1}

    → (A, A + V), 0 off the mask. Unmasked positions between masked ones (the tool results of an agentic rollout)
    are skipped, not episode ends: credit flows across tool turns to the tokens that made the call."""
    B, T = rewards.shape
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    next_value = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(T)):
        m = mask[:, t].bool()
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = torch.where(m, delta + gamma * lam * running, running)
        advantages[:, t] = torch.where(m, running, 0.0)
        next_value = torch.where(m, values[:, t], next_value)
    return advantages, advantages + values * mask.to(values.dtype)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(values - mean) / std over the masked entries only (mean and std of those entries)."""
    m = mask.to(values.dtype)
    mean = (values * m).sum() / m.sum().clamp(min=1)
    var = (((values - mean) * m) ** 2).sum() / m.sum().clamp(min=1)
    return (values - mean) * torch.rsqrt(var + eps) * m
