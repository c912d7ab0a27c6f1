"""A reward model: the decoder's backbone and a scalar head (transformers' Qwen3ForSequenceClassification with
one label).

    h = Backbone(input_ids)          [B, T, hidden]
    r = score(h)[..., 0]             [B, T]   a reward at every position

A conversation's reward is r at its last token, which is where transformers reads it too (the last token that
is not the pad token), so a saved reward model scores the same in `transformers`. Trained by the Bradley–Terry
loss -log σ(r(chosen) - r(rejected)) (`minimind.train.preference`); `score` is the API the RL rewards call.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from minimind.config import ModelConfig
from minimind.model.layers import Linear
from minimind.model.transformer import Backbone, Transformer, training_flops

SEQUENCE_CLASSIFICATION = {"architectures": ["Qwen3ForSequenceClassification"], "id2label": {"0": "LABEL_0"},
                           "label2id": {"LABEL_0": 0}}


class RewardModel(nn.Module):
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
        """Write a Qwen3ForSequenceClassification model directory atomically (`minimind.model.io.save_model`)."""
        from minimind.model.io import save_model
        return save_model(self, path, dtype=dtype, tokenizer=tokenizer)


class Scorer:
    """Rewards for whole conversations: `Scorer.load(DIR).score([[{"role": "user", …}, {"role": "assistant",
    …}], …])` → [float, …]."""

    def __init__(self, model: RewardModel, tokenizer, batch_size: int = 16):
        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None, batch_size: int = 16) -> Scorer:
        from minimind.model.io import load_reward_model
        from minimind.tokenizer import load_tokenizer, tokenizer_dir
        return cls(load_reward_model(path, device=device), load_tokenizer(tokenizer_dir(path)), batch_size)

    @torch.no_grad()
    def score(self, conversations: list[list[dict]], tools: list[list[dict] | None] | None = None) -> list[float]:
        """The reward of each conversation (chat-format messages, usually ending with the assistant's answer),
        read at its last rendered token. Batched longest first and padded on the right: with causal attention
        a token never sees the padding after it, so no mask is needed."""
        device = self.model.score.weight.device
        pairs = list(zip(conversations, tools or [None] * len(conversations), strict=True))
        ids = [ids[:self.model.config.max_position_embeddings] for ids, _ in self.tokenizer.render_chat_batch(pairs)]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out = [0.0] * len(ids)
        for first in range(0, len(order), self.batch_size):
            chunk = order[first:first + self.batch_size]
            batch = torch.full((len(chunk), len(ids[chunk[0]])), self.tokenizer.pad_id, dtype=torch.long)
            for row, i in enumerate(chunk):
                batch[row, :len(ids[i])] = torch.tensor(ids[i])
            last = torch.tensor([len(ids[i]) - 1 for i in chunk], device=device)
            rewards = self.model(batch.to(device))[torch.arange(len(chunk), device=device), last]
            for i, r in zip(chunk, rewards.tolist(), strict=True):
                out[i] = r
        return out
