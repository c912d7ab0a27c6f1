"""The stage registry is the one list: every stage's sections exist in TrainConfig and are validated when it runs,
its data format is a record format, and a stage name outside the list is refused."""

import dataclasses

import pytest

from minimind.data.formats import STAGES as FORMATS
from minimind.errors import MiniMindError
from minimind.overrides import apply_overrides
from minimind.train.config import TrainConfig
from minimind.train.registry import STAGES, make_stage

TRAIN = 'data.train=["x.jsonl"]'


@pytest.mark.parametrize("name", list(STAGES))
def test_each_stage_declares_real_sections_and_a_record_format(name):
    spec = STAGES[name]
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(spec.sections) <= fields and spec.data in FORMATS
    extra = ["distill.teacher=runs/teacher"] if name == "distill" else []
    config = apply_overrides(TrainConfig(), [f"stage={name}", TRAIN, *extra])
    config.validate()
    assert make_stage(config).name == spec.data


def test_sections_are_validated_only_for_their_stage():
    bad = [TRAIN, "rl.group_size=1"]
    apply_overrides(TrainConfig(), ["stage=ppo", *bad]).validate()          # PPO needs no group baseline
    with pytest.raises(MiniMindError, match="rl.group_size"):
        apply_overrides(TrainConfig(), ["stage=grpo", *bad]).validate()
    apply_overrides(TrainConfig(), ["stage=sft", TRAIN, "ppo.gamma=2.0"]).validate()
    with pytest.raises(MiniMindError, match="ppo.gamma"):
        apply_overrides(TrainConfig(), ["stage=ppo", TRAIN, "ppo.gamma=2.0"]).validate()
    with pytest.raises(MiniMindError, match="must be one of"):
        apply_overrides(TrainConfig(), ["stage=rlhf", TRAIN]).validate()
