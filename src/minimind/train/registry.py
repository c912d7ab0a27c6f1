"""The stages `minimind.train.trainer.train` runs, by the name `config.stage` gives: each entry builds the stage
from the run's config."""

from __future__ import annotations

from minimind.data.packing import pack_pretrain, pack_sft
from minimind.train.distill import Distill
from minimind.train.grpo import GRPO
from minimind.train.ppo import PPO
from minimind.train.preference import DPO, RewardModelling
from minimind.train.stages import LanguageModelling

STAGES = {
    "pretrain": lambda config: LanguageModelling("pretrain", pack_pretrain),
    "sft": lambda config: LanguageModelling("sft", pack_sft),
    "lora": lambda config: LanguageModelling("sft", pack_sft),     # sft's data and loss; the trainer adds adapters
    "dpo": DPO,
    "reward": RewardModelling,
    "distill": Distill,
    "grpo": GRPO,
    "ppo": PPO,
}
