"""The one list of training stages. Each entry says what the stage is called on the command line, which record
format its files hold, which sections of the run's config carry its options (validated when it runs), and how
the stage is built; the CLI, `TrainConfig` and the trainer read this list and name no stage themselves."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from minimind.data.packing import pack_pretrain, pack_sft
from minimind.errors import MiniMindError
from minimind.train.diffusion import MaskedDiffusion
from minimind.train.distill import Distill
from minimind.train.grpo import GRPO
from minimind.train.omni import OmniSFT
from minimind.train.ppo import PPO
from minimind.train.preference import DPO, RewardModelling
from minimind.train.stages import LanguageModelling, Stage
from minimind.train.tower import TowerPretraining
from minimind.train.vision import VisionLanguageModelling


@dataclass(frozen=True)
class StageSpec:
    command: str                         # `minimind <command>`
    help: str
    data: str                            # the record format of its files (minimind.data.formats.STAGES)
    build: Callable[..., Stage]          # the run's config → the stage
    sections: tuple[str, ...] = ()       # TrainConfig sections holding its options
    validate: Callable | None = None     # checks across sections: the run's config → None or MiniMindError
    adapters: bool = False               # trains LoRA adapters on a frozen base (checkpoints hold the adapter)
    chat: bool = True                    # its samples are chat replies (else raw continuations)
    black_box: bool = False              # offers `--generate`: the teacher's answers written as sft data
    objectives: tuple[str, ...] = ("causal",)   # the `objective` settings it trains with


def _language_modelling(pack: Callable) -> Callable[..., Stage]:
    """Next-token prediction, or masked diffusion under `objective: diffusion` (the same data and rows)."""
    return lambda config: (MaskedDiffusion(pack, config.diffusion) if config.objective == "diffusion"
                           else LanguageModelling(pack))


def _groups_of_two(config) -> None:
    if config.rl.group_size < 2:
        raise MiniMindError("config key 'rl.group_size' must be ≥ 2 (advantages are relative to the group)")


STAGES: dict[str, StageSpec] = {
    "pretrain": StageSpec("pretrain", "pretrain a model on text (next-token prediction, or objective=diffusion)",
                          "pretrain", _language_modelling(pack_pretrain), chat=False,
                          objectives=("causal", "diffusion")),
    "sft": StageSpec("sft", "supervised fine-tuning on conversations (assistant tokens only; or objective=diffusion)",
                     "sft", _language_modelling(pack_sft), objectives=("causal", "diffusion")),
    "lora": StageSpec("lora", "LoRA fine-tuning on conversations (`minimind lora merge` folds it in)", "sft",
                      lambda config: LanguageModelling(pack_sft), sections=("lora",), adapters=True),
    "dpo": StageSpec("dpo", "preference tuning on chosen/rejected pairs: DPO, IPO or SimPO (dpo.loss=…)", "dpo",
                     DPO, sections=("dpo",)),
    "reward": StageSpec("reward-model", "train a Bradley–Terry reward model on chosen/rejected pairs", "dpo",
                        RewardModelling),
    "grpo": StageSpec("grpo", "RL with verifiable rewards: GRPO, Dr. GRPO, DAPO options, CISPO (rl.loss=cispo)",
                      "rl", GRPO, sections=("rl", "grpo"), validate=_groups_of_two),
    "ppo": StageSpec("ppo", "RL with a learned value function: PPO with GAE, clipped policy and value losses", "rl",
                     PPO, sections=("rl", "ppo")),
    "vision-tower": StageSpec("vision-tower", "pretrain a vision tower on labelled images (a linear head per label; "
                              "vision.tower=DIR then reads it)", "labels", TowerPretraining),
    "vision-pretrain": StageSpec("vision-pretrain", "vision pretraining on image captions (default: the projector "
                                 "alone learns)", "vision", lambda config: VisionLanguageModelling(config, "projector"),
                                 sections=("vision",)),
    "vision-sft": StageSpec("vision-sft", "vision SFT on conversations about images (default: projector + LM layers "
                            "0 and -1)", "vision", lambda config: VisionLanguageModelling(config, "projector+layers"),
                            sections=("vision",)),
    "omni": StageSpec("omni", "speech in and out (MiniMind-O): recognition, spoken instructions, text-to-speech and "
                      "speech-to-speech, as the speech records say", "speech", OmniSFT, sections=("omni",)),
    "distill": StageSpec("distill", "distil a teacher into a student: logits (white-box), or --generate answers",
                         "sft", Distill, sections=("distill",), black_box=True),
}


def make_stage(config) -> Stage:
    """The stage `config.stage` names, built from the run's config, reading its spec's data format."""
    spec = STAGES[config.stage]
    stage = spec.build(config)
    stage.name = spec.data
    return stage
