"""Preference stages: DPO and its variants on the policy, Bradley–Terry on a reward model.

Both read the dpo data (`minimind data prepare --stage dpo`): document 2i is pair i's chosen conversation, 2i+1
its rejected one, each with its assistant tokens as targets (so the response's <|im_end|> is trained, and a
multi-turn pair's earlier replies too). Pairs are packed whole — chosen, then rejected, never split across rows —
and a packed row's k-th sequence is found from position_ids (each 0 starts one), so sequence k = 2j is pair j's
chosen side and k = 2j + 1 its rejected side. Padding after the last pair has no targets; a pair whose
truncation left either side without a target is not counted.

Per sequence, the policy's log-probability of its targets is summed: logp = Σ_t log π(y_t | y_<t). With
z = β·[(logp_θ(y⁺) - logp_ref(y⁺)) - (logp_θ(y⁻) - logp_ref(y⁻))], the losses per pair are

    sigmoid  -(1-ε)·log σ(z) - ε·log σ(-z)                       DPO; ε = label smoothing (cDPO)
    ipo      (h - 1/(2β))²,  h = the log-ratio difference of length-averaged logps                         IPO
    simpo    -(1-ε)·log σ(z') - ε·log σ(-z'),  z' = β·(logp(y⁺)/|y⁺| - logp(y⁻)/|y⁻|) - γ     SimPO: no reference

and the implicit reward of a response is β·(logp_θ - logp_ref) (SimPO: β·logp_θ/|y|). The reward model's loss is
-log σ(r(y⁺) - r(y⁻)), r read at each sequence's last token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

from minimind.config import PRESETS
from minimind.data.loader import row_batches
from minimind.data.packing import pack_pairs
from minimind.errors import MiniMindError
from minimind.model import RewardModel, Transformer, is_reward_model, load_reward_model
from minimind.model.loss import IGNORE_INDEX, token_logprobs
from minimind.model.transformer import document_index
from minimind.train.stages import Loss, Stage, StageData


@dataclass
class DPOConfig:
    loss: Literal["sigmoid", "ipo", "simpo"] = "sigmoid"
    beta: float = 0.1                  # β: the strength of the KL anchor (SimPO: the reward scale, ~2)
    label_smoothing: float = 0.0       # ε: the assumed fraction of flipped labels (sigmoid, simpo)
    simpo_gamma: float = 0.5           # γ: SimPO's target margin
    reference: str = ""                # the reference model directory; "" = the starting model
    precompute_reference: bool = False  # reference log-probs in one pass before training, then no reference model

    def validate(self) -> None:
        if self.beta <= 0:
            raise MiniMindError("config key 'dpo.beta' must be > 0")
        if not 0 <= self.label_smoothing < 0.5:
            raise MiniMindError("config key 'dpo.label_smoothing' must be in [0, 0.5)")


def sequence_sums(values: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """values [B, T] → [B, T]: column k holds the sum of values over row's k-th sequence (0 past the last)."""
    return torch.zeros_like(values).scatter_add_(1, document_index(position_ids), values)


def pairs(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence values [B, T] → (chosen [B, T//2], rejected [B, T//2]): sequences 2j and 2j + 1."""
    half = values.shape[1] // 2
    return values[:, 0:2 * half:2], values[:, 1:2 * half:2]


def pair_targets(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(targets of each chosen side [B, P], of each rejected side [B, P], valid pairs [B, P] bool)."""
    counts = sequence_sums((batch["labels"] != IGNORE_INDEX).float(), batch["position_ids"])
    chosen, rejected = pairs(counts)
    return chosen, rejected, (chosen > 0) & (rejected > 0)


def preference_loss(kind: str, policy_chosen, policy_rejected, reference_chosen, reference_rejected,
                    chosen_tokens, rejected_tokens, beta: float, label_smoothing: float = 0.0,
                    simpo_gamma: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed log-probs of each side (any shape, one entry per pair) → (loss, chosen reward, rejected reward),
    each per pair (see the module docstring)."""
    if kind == "simpo":
        chosen = beta * policy_chosen / chosen_tokens
        rejected = beta * policy_rejected / rejected_tokens
        z = chosen - rejected - simpo_gamma
    else:
        chosen = beta * (policy_chosen - reference_chosen)
        rejected = beta * (policy_rejected - reference_rejected)
        z = chosen - rejected
    if kind == "ipo":
        h = ((policy_chosen - reference_chosen) / chosen_tokens
             - (policy_rejected - reference_rejected) / rejected_tokens)
        loss = (h - 1 / (2 * beta)) ** 2
    elif kind in ("sigmoid", "simpo"):
        loss = -(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)
    else:
        raise ValueError(f"unknown preference loss {kind!r}")
    return loss, chosen.detach(), rejected.detach()


class PairScores(NamedTuple):
    """Per pair [B, P]: the loss, the implicit rewards, the policy's summed log-probs and target counts of
    each side, and whether the pair counts; plus the batch's MoE aux loss."""
    loss: torch.Tensor
    chosen: torch.Tensor
    rejected: torch.Tensor
    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor
    valid: torch.Tensor
    aux: torch.Tensor


class PreferenceStage(Stage):
    """The data side both preference stages share."""
    pack = staticmethod(pack_pairs)
    generative = False

    def __init__(self, config):
        self.config = config

    def count(self, batch):
        return pair_targets(batch)[2].sum()


class DPO(PreferenceStage):
    generative = True

    def __init__(self, config):
        super().__init__(config)
        self.options: DPOConfig = config.dpo
        self.with_docs = self.options.precompute_reference     # doc ids look up the precomputed log-probs
        self.reference: Transformer | None = None
        self.reference_logps: torch.Tensor | None = None          # [documents] when precomputed

    def setup(self, model, data: StageData, config, device, autocast) -> None:
        """The frozen reference: the starting model (`model`, rebuilt the same way when the run resumes), or
        `dpo.reference`; with precompute_reference, its summed log-probs of every train and validation
        sequence, computed once, and the model freed."""
        if self.options.loss == "simpo":
            return
        source = self.options.reference or config.model
        reference = self.frozen_start(source, config, device)
        if reference.config.vocab_size != model.config.vocab_size:
            raise MiniMindError(f"config key 'dpo.reference': {source} has a vocabulary of "
                                f"{reference.config.vocab_size}, the policy {model.config.vocab_size}")
        self.reference = reference
        if self.options.precompute_reference:
            self.reference_logps = {"train": self._precompute(data.train, data.rows, config, device, autocast)}
            if data.val is not None:
                self.reference_logps["val"] = self._precompute(data.val, data.val_rows, config, device, autocast)
            self.reference = None

    @torch.no_grad()
    def _precompute(self, documents, rows, config, device, autocast) -> torch.Tensor:
        out = torch.zeros(documents.num_docs, dtype=torch.float32, device=device)
        for batch in row_batches(documents, rows, config.batch_size, config.data.seq_len, device=device,
                                 with_docs=True):
            with autocast:
                logits = self.reference(batch["input_ids"], position_ids=batch["position_ids"]).logits
            logps = token_logprobs(logits, batch["labels"])
            out.index_add_(0, batch["doc_ids"].clamp(min=0).flatten(), (logps * (batch["doc_ids"] >= 0)).flatten())
        return out

    def _reference_sums(self, batch, split: str) -> torch.Tensor:
        if self.reference_logps is not None:
            docs = torch.full_like(batch["doc_ids"], -1).scatter_reduce_(
                1, document_index(batch["position_ids"]), batch["doc_ids"], reduce="amax")
            return torch.where(docs >= 0, self.reference_logps[split][docs.clamp(min=0)], 0.0)
        with torch.no_grad():
            logits = self.reference(batch["input_ids"], position_ids=batch["position_ids"]).logits
            return sequence_sums(token_logprobs(logits, batch["labels"]), batch["position_ids"])

    def _pairs(self, model, batch, split: str) -> PairScores:
        out = model(batch["input_ids"], position_ids=batch["position_ids"])
        policy = sequence_sums(token_logprobs(out.logits, batch["labels"]), batch["position_ids"])
        reference = (self._reference_sums(batch, split) if self.options.loss != "simpo"
                     else torch.zeros_like(policy))
        chosen_tokens, rejected_tokens, valid = pair_targets(batch)
        (policy_chosen, policy_rejected), (reference_chosen, reference_rejected) = pairs(policy), pairs(reference)
        o = self.options
        loss, chosen, rejected = preference_loss(
            o.loss, policy_chosen, policy_rejected, reference_chosen, reference_rejected,
            chosen_tokens.clamp(min=1), rejected_tokens.clamp(min=1), o.beta, o.label_smoothing, o.simpo_gamma)
        return PairScores(loss, chosen, rejected, policy_chosen.detach(), policy_rejected.detach(), chosen_tokens,
                          rejected_tokens, valid, out.aux_loss)

    def loss(self, model, batch):
        p = self._pairs(model, batch, "train")
        v = p.valid.float()
        metrics = {"reward_chosen": (p.chosen * v).sum(), "reward_rejected": (p.rejected * v).sum(),
                   "reward_margin": ((p.chosen - p.rejected) * v).sum(),
                   "reward_accuracy": ((p.chosen > p.rejected) * v).sum()}
        return Loss((p.loss * v).sum(), p.aux, metrics)

    @torch.no_grad()
    def evaluate(self, model, batches, token_bytes) -> dict:
        """Means over held-out pairs: the loss, the implicit rewards and their accuracy, and the policy's own
        preference — how often logp(chosen) > logp(rejected), summed and per token — which needs no reference
        and so also measures the starting model."""
        sums = torch.zeros(7, dtype=torch.float64)
        for batch in batches:
            p = self._pairs(model, batch, "val")
            v = p.valid.float()
            per_token = (p.policy_chosen / p.chosen_tokens.clamp(min=1)
                         > p.policy_rejected / p.rejected_tokens.clamp(min=1))
            sums += torch.stack([v.sum(), (p.loss * v).sum(), (p.chosen * v).sum(), (p.rejected * v).sum(),
                                 ((p.chosen > p.rejected) * v).sum(), ((p.policy_chosen > p.policy_rejected) * v).sum(),
                                 (per_token * v).sum()]).double().cpu()
        n = sums[0].clamp(min=1)
        names = ("loss", "reward_chosen", "reward_rejected", "reward_accuracy", "preference_accuracy",
                 "preference_accuracy_per_token")
        return {"pairs": int(sums[0])} | {name: (value / n).item() for name, value in zip(names, sums[1:], strict=True)}

    def flops_per_token(self, model, seq_len: int) -> int:
        """The policy's forward and backward, plus the reference's forward (⅓ as much) when it runs each step."""
        own = model.flops_per_token(seq_len)
        return own + own // 3 if self.reference is not None else own


class RewardModelling(PreferenceStage):
    def build_model(self, source, device) -> RewardModel:
        """A reward model directory continues; a language model (a preset: fresh) gets a scalar head on its
        backbone."""
        if source not in PRESETS and is_reward_model(source):
            return load_reward_model(source, device=device, dtype=torch.float32)
        return RewardModel.from_lm(super().build_model(source, device))

    def _pairs(self, model, batch):
        """(rewards of the chosen sides [B, P], of the rejected sides [B, P], valid pairs [B, P])."""
        rewards = model(batch["input_ids"], position_ids=batch["position_ids"])
        T = rewards.shape[1]
        sequence = document_index(batch["position_ids"])
        last = torch.zeros_like(sequence).scatter_reduce_(
            1, sequence, torch.arange(T, device=sequence.device).expand_as(sequence), reduce="amax")
        chosen, rejected = pairs(rewards.gather(1, last))
        return chosen, rejected, pair_targets(batch)[2]

    def loss(self, model, batch):
        chosen, rejected, valid = self._pairs(model, batch)
        v = valid.float()
        loss = -F.logsigmoid(chosen - rejected)
        metrics = {"accuracy": ((chosen > rejected) * v).sum(), "margin": ((chosen - rejected).detach() * v).sum()}
        return Loss((loss * v).sum(), torch.zeros((), device=loss.device), metrics)

    @torch.no_grad()
    def evaluate(self, model, batches, token_bytes) -> dict:
        """Means over held-out pairs: the loss, how often r(chosen) > r(rejected), and the margin."""
        sums = torch.zeros(4, dtype=torch.float64)
        for batch in batches:
            chosen, rejected, valid = self._pairs(model, batch)
            v = valid.float()
            sums += torch.stack([v.sum(), (-F.logsigmoid(chosen - rejected) * v).sum(),
                                 ((chosen > rejected) * v).sum(), ((chosen - rejected) * v).sum()]).double().cpu()
        n = sums[0].clamp(min=1)
        return {"pairs": int(sums[0]), "loss": (sums[1] / n).item(), "accuracy": (sums[2] / n).item(),
                "margin": (sums[3] / n).item()}
