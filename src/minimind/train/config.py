"""The training run's configuration: typed sections, read from `configs/<preset>/<stage>.yaml` plus `key=value`
overrides (e.g. `optim.lr=1e-3 data.seq_len=256`), validated, and saved as `config.yaml` in every run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from minimind.config import DTYPE_NAMES, OBJECTIVES
from minimind.errors import MiniMindError
from minimind.lora import LoRAConfig
from minimind.model.kernels import Kernels
from minimind.overrides import load_yaml, to_dict
from minimind.rl.config import GRPOConfig, PPOConfig, RLConfig
from minimind.train.diffusion import DiffusionTrainConfig
from minimind.train.distill import DistillConfig
from minimind.train.omni import OmniTrainConfig
from minimind.train.preference import DPOConfig
from minimind.train.registry import STAGES
from minimind.train.vision import VisionTrainConfig
from minimind.train.zero import DeepSpeedConfig


@dataclass
class DataConfig:
    train: list[str] = field(default_factory=list)   # jsonl files of the stage's format
    val: list[str] = field(default_factory=list)     # held-out jsonl files for validation loss and bits per byte
    seq_len: int = 512                                # tokens per packed row
    prepared: str = ""                                # where prepared (tokenized) data is cached; "" = OUT/../prepared


@dataclass
class OptimConfig:
    optimizer: Literal["adamw", "muon"] = "adamw"    # muon: Muon for hidden matrices, AdamW for the rest
    lr: float = 5e-4                                  # peak AdamW learning rate
    muon_lr: float = 0.02                             # peak Muon learning rate (optimizer=muon)
    min_lr_ratio: float = 0.1                         # the schedule's floor, as a fraction of the peak
    warmup_steps: int = 100
    decay: Literal["cosine", "linear", "constant"] = "cosine"
    weight_decay: float = 0.1                         # on matrices only
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0                            # max global grad norm; 0 = off


@dataclass
class TrainConfig:
    stage: str = "pretrain"              # an entry of minimind.train.registry.STAGES
    model: str = "tiny"                  # a preset name (fresh weights) or a model directory to continue from
    objective: Literal[OBJECTIVES] = "causal"   # diffusion: a masked-diffusion LM (pretrain, sft; train/diffusion.py)
    out: str = "runs/train"              # run directory: model/, checkpoints/, metrics.jsonl, config.yaml
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)   # stage lora: adapters on a frozen base (sft data)
    dpo: DPOConfig = field(default_factory=DPOConfig)      # stage dpo: loss, β, the reference (dpo data)
    distill: DistillConfig = field(default_factory=DistillConfig)   # stage distill: the teacher, D, τ, α (sft data)
    rl: RLConfig = field(default_factory=RLConfig)            # stages grpo, ppo: rollouts, rewards, loss (rl data)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)      # stage grpo: group baselines, refills
    ppo: PPOConfig = field(default_factory=PPOConfig)         # stage ppo: the critic, GAE
    vision: VisionTrainConfig = field(default_factory=VisionTrainConfig)   # vision stages: what trains, the tower
    omni: OmniTrainConfig = field(default_factory=OmniTrainConfig)         # stage omni: what trains
    diffusion: DiffusionTrainConfig = field(default_factory=DiffusionTrainConfig)   # objective diffusion: ε, [MASK]
    batch_size: int = 8                  # packed rows per micro-batch (per process)
    tokens_per_step: int = 0             # tokens per optimiser step (all processes); 0 = one micro-batch each
    max_steps: int = 0                   # optimiser steps; 0 = `epochs` over the training rows
    epochs: float = 1.0
    device: str = "auto"                 # auto | cpu | cuda | cuda:N | mps
    dtype: Literal[("auto", *DTYPE_NAMES)] = "auto"   # auto: bf16 where supported, else fp32
    compile: bool = False
    kernels: Kernels = "auto"            # auto: the fast paths of minimind.model.kernels; reference: the plain model
    activation_checkpointing: bool = False   # recompute blocks' activations in backward (all, or those below)
    checkpoint_layers: list[int] = field(default_factory=list)   # only these blocks (with activation_checkpointing)
    checkpoint_every: int = 0            # only every k-th block: 0, k, 2k, … (with activation_checkpointing)
    fsdp: bool = False                   # shard parameters, gradients and optimiser state (FSDP2) under torchrun
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)   # ZeRO 1–3 under torchrun (instead of DDP)
    seed: int = 0
    log_every: int = 10
    eval_every: int = 100                # validation loss + bits per byte; 0 = only at the end
    eval_batches: int = 8
    sample_every: int = 0                # sample generations; 0 = only at the end
    save_every: int = 200                # checkpoint; 0 = only at the end (and on SIGINT/SIGTERM)
    keep_last: int = 2                   # checkpoints kept
    max_bad_steps: int = 5               # consecutive non-finite losses before the run stops
    logger: Literal["none", "tensorboard", "wandb", "swanlab"] = "none"
    samples: list[str] = field(default_factory=list)   # prompts for sample generations

    def validate(self) -> None:
        if self.stage not in STAGES:
            raise MiniMindError(f"config key 'stage' must be one of {', '.join(STAGES)}; got {self.stage!r}")
        if not self.data.train:
            raise MiniMindError("config key 'data.train' must list at least one file")
        for name in ("batch_size", "log_every", "keep_last", "eval_batches", "max_bad_steps"):
            if getattr(self, name) < 1:
                raise MiniMindError(f"config key '{name}' must be ≥ 1")
        for name in ("max_steps", "tokens_per_step", "eval_every", "save_every", "sample_every"):
            if getattr(self, name) < 0:
                raise MiniMindError(f"config key '{name}' must be ≥ 0")
        if self.epochs <= 0:
            raise MiniMindError("config key 'epochs' must be > 0")
        if self.optim.warmup_steps < 0 or self.optim.grad_clip < 0 or self.optim.weight_decay < 0:
            raise MiniMindError("config keys 'optim.warmup_steps', 'optim.grad_clip', 'optim.weight_decay' "
                                "must be ≥ 0")
        spec = STAGES[self.stage]
        if self.objective not in spec.objectives:
            raise MiniMindError(f"config key 'objective': stage {self.stage} trains with objective "
                                f"{' or '.join(spec.objectives)}, not {self.objective!r}")
        if self.objective == "diffusion":
            self.diffusion.validate()
        for section in spec.sections:
            getattr(self, section).validate()
        if spec.validate is not None:
            spec.validate(self)
        if (self.checkpoint_layers or self.checkpoint_every) and not self.activation_checkpointing:
            raise MiniMindError("config keys 'checkpoint_layers' / 'checkpoint_every' choose blocks for "
                                "activation_checkpointing=true; set it too")
        if self.checkpoint_layers and self.checkpoint_every:
            raise MiniMindError("config keys 'checkpoint_layers' and 'checkpoint_every': give one of them")
        if self.checkpoint_every < 0 or any(i < 0 for i in self.checkpoint_layers):
            raise MiniMindError("config keys 'checkpoint_every' and 'checkpoint_layers' must be ≥ 0")
        self.deepspeed.validate()
        if self.deepspeed.stage and (self.fsdp or self.compile or self.optim.optimizer != "adamw"):
            raise MiniMindError("config key 'deepspeed.stage' runs AdamW without fsdp or compile (DeepSpeed "
                                "shards and wraps the model itself)")
        if self.data.seq_len < 8:
            raise MiniMindError("config key 'data.seq_len' must be ≥ 8")
        if self.optim.lr <= 0 or not 0 <= self.optim.min_lr_ratio <= 1:
            raise MiniMindError("config keys 'optim.lr' > 0 and 0 ≤ 'optim.min_lr_ratio' ≤ 1 are required")


def load_config(path: str | Path | None, overrides: list[str], **defaults) -> TrainConfig:
    """TrainConfig from defaults, then the YAML file, then the overrides; validated."""
    return load_yaml(TrainConfig(**defaults), path, overrides)


def save_config(config: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True))
