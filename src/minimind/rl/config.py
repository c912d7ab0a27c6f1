"""The options of the RL stages: `rl` holds what GRPO and PPO share (rollouts, rewards, tools, the policy loss),
`grpo` and `ppo` what each adds (group baselines and refills; the critic and GAE)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from minimind.errors import MiniMindError
from minimind.rl.tools import TOOLS


@dataclass
class RLConfig:
    rewards: dict[str, float] = field(default_factory=lambda: {"accuracy": 1.0})   # name → weight
    reward_model: str = ""             # directory of a reward model, for the reward "reward_model"
    prompts_per_rollout: int = 8       # per process
    group_size: int = 8                # G: samples per prompt (ppo: per prompt, without a group baseline)
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    num_iterations: int = 2            # passes over each rollout (μ); > 1 lets the ratio and the clip act
    mini_batches: int = 2              # optimiser steps per pass
    loss: Literal["clip", "cispo"] = "clip"
    eps_low: float = 0.2
    eps_high: float = 0.28             # DAPO's clip-higher
    cispo_eps_high: float = 5.0        # CISPO: the importance weight is capped at 1 + this
    aggregation: Literal["token", "sequence", "constant"] = "token"
    kl_coef: float = 0.0               # β of the k3 KL to the reference (0: no reference model)
    overlong_buffer: int = 0           # soft overlong penalty over the last this-many tokens (0: off)
    overlong_penalty: float = 1.0
    eval_prompts: int = 100            # held-out prompts answered greedily at each evaluation
    agent: bool = False                # multi-turn rollouts with tool calls (rl.tools), tool results masked out
    tools: list[str] = field(default_factory=lambda: ["calculator"])   # whitelisted tools (minimind.rl.tools),
    #                                                     offered where a record carries no tool schemas of its own
    tool_functions: dict[str, str] = field(default_factory=dict)   # a record's own tool → its "module:function"
    max_turns: int = 3                 # assistant turns per trajectory in agent mode
    tool_timeout: float = 2.0          # seconds per tool call
    rollout_backend: Literal["engine", "vllm"] = "engine"   # vllm: colocated vLLM on the GPU (rl/vllm_rollouts.py)
    vllm_gpu_memory: float = 0.3       # the fraction of GPU memory vLLM may take

    def validate(self) -> None:
        for name in ("prompts_per_rollout", "group_size", "max_new_tokens", "num_iterations", "mini_batches",
                     "eval_prompts"):
            if getattr(self, name) < 1:
                raise MiniMindError(f"config key 'rl.{name}' must be ≥ 1")
        if self.prompts_per_rollout * self.group_size < self.mini_batches:
            raise MiniMindError("config key 'rl.mini_batches' exceeds the samples of a rollout")
        unknown = [name for name in self.tools if name not in TOOLS]
        if self.agent and unknown:
            raise MiniMindError(f"config key 'rl.tools': unknown tool {unknown[0]!r}; known: {', '.join(TOOLS)}")
        if not 0 <= self.overlong_buffer < self.max_new_tokens:
            raise MiniMindError("config key 'rl.overlong_buffer' must be in [0, rl.max_new_tokens)")


@dataclass
class GRPOConfig:
    scale_std: bool = True             # divide advantages by the group's std (off: Dr. GRPO)
    dynamic_sampling: bool = False     # refill groups whose rewards are all equal (DAPO)
    max_refills: int = 2

    def validate(self) -> None:
        if self.max_refills < 0:
            raise MiniMindError("config key 'grpo.max_refills' must be ≥ 0")


@dataclass
class PPOConfig:
    critic: Literal["separate", "shared"] = "separate"   # the value model's own trunk, or a head on the policy's
    gamma: float = 1.0                 # GAE discount
    lam: float = 0.95                  # GAE λ
    whiten: bool = True                # whiten advantages over the rollout's tokens
    vf_coef: float = 0.5               # weight of the value loss
    vf_clip: float = 0.2               # value clip range around the rollout's values
    kl_in_reward: bool = False         # the KL penalty in the per-token reward instead of the loss

    def validate(self) -> None:
        if not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1):
            raise MiniMindError("config keys 'ppo.gamma' and 'ppo.lam' must be in [0, 1]")
