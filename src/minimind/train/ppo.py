"""PPO with a learned value function, as a stage of the one trainer (rollouts as in GRPO; minimind.train.grpo).

    critic      V(s_t) for the state before each completion token: its own trunk (ppo.critic=separate, initialised
                from the policy) or a value head on the policy's backbone (ppo.critic=shared)
    rewards     per token: the sequence's reward on its last token, and with ppo.kl_in_reward
                -kl_coef·(logπ_old - logπ_ref) on every token (else the k3 KL is a loss term, as in GRPO)
    advantages  GAE(γ, λ) over the completion tokens, whitened over the rollout (ppo.whiten); returns = A + V_old
    loss        clip policy loss + vf_coef · ½·max((V - R)², (clip(V, V_old ± vf_clip) - R)²), per token

The model the trainer holds is an `ActorCritic`; its directory is the policy (`OUT/model`, a plain Qwen3
checkpoint), and the critic is saved beside it as a reward-model directory (`OUT/critic`), which a resumed or
continued run picks up again.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn as nn

from minimind.model import RewardModel, Transformer, load_reward_model
from minimind.model.layers import Linear
from minimind.model.loss import token_entropy, token_logprobs
from minimind.rl.config import GRPOConfig, PPOConfig
from minimind.rl.losses import aggregate, gae, k3, masked_whiten, policy_loss
from minimind.train.grpo import GRPO
from minimind.train.stages import Loss, Stage


class ActorCritic(nn.Module):
    """The policy (a Transformer) and its critic: `critic` a RewardModel with its own trunk, or `value_head` a
    [1, hidden] head on the policy's final hidden states."""

    def __init__(self, policy: Transformer, critic: RewardModel | None, value_head: Linear | None):
        super().__init__()
        self.policy, self.critic, self.value_head = policy, critic, value_head
        self.config = policy.config

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids [B, T] → (logits [B, T, V], values [B, T] fp32, V read at every position)."""
        if self.value_head is not None:
            h, _ = self.policy.model(input_ids)
            return self.policy.lm_head(h), self.value_head(h)[..., 0].float()
        return self.policy(input_ids).logits, self.critic(input_ids)

    def critic_model(self) -> RewardModel:
        """The critic as a reward-model directory's module (the shared head on a copy of the backbone)."""
        if self.critic is not None:
            return self.critic
        critic = RewardModel.from_lm(self.policy)
        critic.score = self.value_head
        return critic

    def num_params(self, active: bool = False) -> int:
        extra = self.critic.num_params(active) if self.critic is not None else self.value_head.weight.numel()
        return self.policy.num_params(active) + extra

    def flops_per_token(self, seq_len: int) -> int:
        critic = self.critic.flops_per_token(seq_len) if self.critic is not None else 6 * self.config.hidden_size
        return self.policy.flops_per_token(seq_len) + critic

    def save(self, path: str | Path, dtype: torch.dtype | None = None, tokenizer=None) -> Path:
        """The policy at `path`, the critic at `path`/../critic."""
        path = Path(path)
        self.critic_model().save(path.parent / "critic", dtype=dtype, tokenizer=tokenizer)
        return self.policy.save(path, dtype=dtype, tokenizer=tokenizer)


class PPO(GRPO):
    def __init__(self, config):
        super().__init__(config)
        self.ppo: PPOConfig = config.ppo
        self.group = GRPOConfig()              # GRPO's group options (std scaling, refills) do not apply

    def build_model(self, source: str, device: torch.device) -> ActorCritic:
        """The policy from `source`; the critic from `source`/../critic when a PPO run left one there, else new:
        a copy of the policy's trunk with a fresh head (separate), or a fresh head (shared)."""
        policy = Stage.build_model(self, source, device)
        critic_dir = Path(source).parent / "critic"
        saved = load_reward_model(critic_dir, device=device, dtype=torch.float32) \
            if (critic_dir / "config.json").is_file() else None
        if self.ppo.critic == "shared":
            head = saved.score if saved is not None else _fresh_head(policy)
            return ActorCritic(policy, None, head)
        critic = saved if saved is not None else RewardModel.from_lm(copy.deepcopy(policy))
        return ActorCritic(policy, critic.train(), None)

    def policy(self, model):
        return model.policy

    def loader(self, model, tokenizer, data, config, info, device):
        self.actor_critic = model
        return super().loader(model, tokenizer, data, config, info, device)

    @torch.no_grad()
    def advantages(self, rewards: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Old values, per-token rewards, GAE advantages (whitened) and returns, all [N, T]."""
        o, mask = self.ppo, batch["mask"]
        with self.autocast:
            values = torch.cat([_shift(self.actor_critic(ids)[1]) for ids in batch["input_ids"].split(16)])
        last = mask * (mask.cumsum(dim=1) == mask.sum(dim=1, keepdim=True))     # each row's last completion token
        token_rewards = last * rewards[:, None]
        if o.kl_in_reward and self.reference is not None:
            token_rewards = token_rewards - self.options.kl_coef * (batch["old_logps"] - batch["ref_logps"]) * mask
        advantages, returns = gae(token_rewards, values * mask, mask, o.gamma, o.lam)
        if o.whiten:
            advantages = masked_whiten(advantages, mask)
        return {"advantages": advantages, "returns": returns, "old_values": values}

    def loss(self, model, batch):
        o, p, mask = self.options, self.ppo, batch["mask"]
        logits, values = model(batch["input_ids"])
        logps = token_logprobs(logits, batch["input_ids"])
        values = _shift(values)
        per_token, clipped = policy_loss(logps, batch["old_logps"], batch["advantages"], "clip", o.eps_low,
                                         o.eps_high)
        clipped_values = batch["old_values"] + (values - batch["old_values"]).clamp(-p.vf_clip, p.vf_clip)
        value_loss = 0.5 * torch.maximum((values - batch["returns"]) ** 2, (clipped_values - batch["returns"]) ** 2)
        kl = k3(logps, batch["ref_logps"]) if o.kl_coef > 0 and not p.kl_in_reward else torch.zeros_like(logps)
        total, units = aggregate(per_token + p.vf_coef * value_loss + o.kl_coef * kl, mask, o.aggregation,
                                 o.max_new_tokens)
        tokens = mask.sum().clamp(min=1)
        metrics = {name: (value * mask).sum() / tokens * units for name, value in
                   (("clip_fraction", clipped.float()), ("kl", kl.detach()), ("value_loss", value_loss.detach()),
                    ("ratio", torch.exp(logps - batch["old_logps"]).detach()), ("entropy", token_entropy(logits)))}
        return Loss(total, torch.zeros((), device=total.device), metrics)

    def evaluate(self, model, records, token_bytes) -> dict:
        return super().evaluate(self.policy(model), records, token_bytes)


def _shift(values: torch.Tensor) -> torch.Tensor:
    """Values read at every position [B, T] → the value of the state before token t, at t (0 at t = 0)."""
    return torch.nn.functional.pad(values[:, :-1], (1, 0))


def _fresh_head(policy: Transformer) -> Linear:
    head = Linear(policy.config.hidden_size, 1).to(policy.lm_head.weight)
    nn.init.normal_(head.weight, 0.0, policy.config.initializer_range)
    return head
