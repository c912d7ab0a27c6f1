"""A reward model: the decoder's backbone and a scalar head (transformers' Qwen3ForSequenceClassification with
one label).

    h = Backbone(input_ids)          [B, T, hidden]
    r = score(h)[..., 0]             [B, T]   a reward at every position

A conversation's reward is r at its last token, which is where transformers reads it too (the last token that
is not the pad token), so a saved reward model scores the same in `transformers`. Trained by the Bradley–Terry
loss -log σ(r(chosen) - r(rejected)) (`minimind.train.preference`); `minimind.rl.rewards.RewardScorer` scores
conversations with it.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from minimind.config import ModelConfig
from minimind.model.layers import Linear
from minimind.model.save import save_model
from minimind.model.transformer import Backbone, Transformer, training_flops

SEQUENCE_CLASSIFICATION = {"architectures": ["Qwen3ForSequenceClassification"], "id2label": {"0": "LABEL_0"},
                           "label2id": {"LABEL_0": 0}}


class RewardModel(nn.Module):
    hf_config = SEQUENCE_CLASSIFICATION            # what config.json adds to the language model's fields

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = Backbone(config)
        self.score = Linear(config.hidden_size, 1)
        self.init_weights()

    init_weights = Transformer.init_weights          # the same initialisation; the head ~ N(0, σ)
    num_params = Transformer.num_params

    @classmethod
    def from_lm(cls, lm: Transformer) -> RewardModel:
        """A reward model on a language model's backbone (shared, not copied); a fresh head."""
        with torch.device("meta"):
            model = cls(lm.config)
        model.model = lm.model
        model.score = Linear(lm.config.hidden_size, 1).to(lm.lm_head.weight)
        nn.init.normal_(model.score.weight, 0.0, lm.config.initializer_range)
        return model.train(lm.training)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids [B, T] → rewards [B, T] (fp32) at every position. position_ids [B, T] describe packed rows,
        as for the language model."""
        h, _ = self.model(input_ids, position_ids=position_ids)
        return self.score(h)[..., 0].float()

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token: the embedding is a lookup, the head a [1, hidden] matmul."""
        return training_flops(self, seq_len, lookup=self.config.vocab_size * self.config.hidden_size)

    def save(self, path: str | Path, dtype: torch.dtype | None = None, tokenizer=None) -> Path:
        """Write a Qwen3ForSequenceClassification model directory atomically (`minimind.model.save.save_model`)."""
        return save_model(self, path, dtype=dtype, tokenizer=tokenizer)
