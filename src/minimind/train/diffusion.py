"""Masked diffusion (LLaDA, MDLM) as a setting of the one trainer: `objective: diffusion` turns pretraining (every
token may be noised) and SFT (the answer's tokens only; the prompt stays clean) into training a diffusion LM.

Forward process, per document d of a packed row (each document is one sample):

    t_d ~ U(0, 1),   p_d = (1 − ε)·t_d + ε                      (ε = diffusion.epsilon: no document is never noised)
    x̃_i = [MASK] with probability p_d, else x_i                 (for the eligible tokens i: labels ≠ −100)

Loss (no shift: the logit at position i predicts the token at position i), summed here and divided by the trainer:

    L = Σ_i m_i · (−log p_θ(x_i | x̃)) / p_d(i)  /  Σ_i e_i       m_i: noised, e_i: eligible

E_t[L · Σe] is the continuous-time ELBO's bound on −log p(x) (LLaDA eq. 3; MDLM's 1/t weight), so the validation
loss reads as an upper bound on the exact cross-entropy an autoregressive model reports. A batch without eligible
tokens sums to 0 (and the trainer divides by max(count, 1)): never 0/0. The MoE balancing loss is added, as for
every stage. The model attends both ways within each document (`Backbone` with `objective: diffusion`).

Where the model comes from: a preset (fresh weights), a causal model directory (MiniMind-dLM's "A2D" start: the
same weights, attention turned bidirectional), or a diffusion directory (continue).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from minimind.config import PRESETS, preset
from minimind.errors import MiniMindError
from minimind.model import Transformer, load_model
from minimind.model.loss import IGNORE_INDEX
from minimind.model.transformer import document_index
from minimind.train.stages import LanguageModelling, Loss, model_dir


@dataclass
class DiffusionTrainConfig:
    epsilon: float = 1e-3            # the floor of the masking probability: p = (1 − ε)·t + ε (LLaDA's 1e-3)
    mask_token_id: int = 27          # the [MASK] token: <|buffer1|>, reserved in the tokenizer (as MiniMind-dLM)

    def validate(self) -> None:
        if not 0 < self.epsilon < 1:
            raise MiniMindError(f"config key 'diffusion.epsilon' must be in (0, 1), got {self.epsilon}")
        if self.mask_token_id < 0:
            raise MiniMindError("config key 'diffusion.mask_token_id' must be a token id ≥ 0")


def as_diffusion(model: Transformer, mask_token_id: int) -> Transformer:
    """The same weights as a diffusion model (bidirectional attention, [MASK] = mask_token_id): the A2D start."""
    if model.config.is_diffusion:
        return model
    device = model.lm_head.weight.device
    out = Transformer(model.config.replace(objective="diffusion", mask_token_id=mask_token_id))
    out.load_state_dict(model.state_dict())
    return out.to(device)


def add_noise(input_ids: torch.Tensor, eligible: torch.Tensor, position_ids: torch.Tensor, mask_token_id: int,
              epsilon: float, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor,
                                                                                  torch.Tensor]:
    """The forward process on packed rows: input_ids, eligible (bool), position_ids [B, T] → (noised ids,
    noised (bool), p [B, T] each token's masking probability). One t per document (documents start where
    position_ids is 0), drawn without a host sync (a row has at most T documents)."""
    B, T = input_ids.shape
    t = torch.rand((B, T), device=input_ids.device, generator=generator)       # t of document j in row b: t[b, j]
    p = ((1 - epsilon) * t + epsilon).gather(1, document_index(position_ids).clamp(min=0))
    noised = eligible & (torch.rand((B, T), device=input_ids.device, generator=generator) < p)
    return torch.where(noised, mask_token_id, input_ids), noised, p


def masked_losses(logits: torch.Tensor, input_ids: torch.Tensor, noised: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """[B, T]: −log p_θ(x_i | x̃) / p_i at the noised positions, 0 elsewhere (fp32)."""
    targets = torch.where(noised, input_ids, IGNORE_INDEX)
    nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX,
                          reduction="none").view_as(targets)
    return nll / p


class MaskedDiffusion(LanguageModelling):
    """LanguageModelling with the diffusion objective: the same data and rows, the loss above."""

    def __init__(self, pack: Callable, settings: DiffusionTrainConfig):
        super().__init__(pack)
        self.settings = settings

    def build_model(self, source: str, device: torch.device) -> Transformer:
        if source in PRESETS:
            config = preset(source).replace(objective="diffusion", mask_token_id=self.settings.mask_token_id)
            return Transformer(config).to(device)
        model = load_model(model_dir(source), device=device, dtype=torch.float32)
        if model.config.is_diffusion and model.config.mask_token_id != self.settings.mask_token_id:
            raise MiniMindError(f"{source}: the model's [MASK] is token {model.config.mask_token_id}, but "
                                f"diffusion.mask_token_id is {self.settings.mask_token_id}")
        return as_diffusion(model, self.settings.mask_token_id)

    def count(self, batch):
        return (batch["labels"] != IGNORE_INDEX).sum()

    def loss(self, model, batch, generator: torch.Generator | None = None):
        """Σ over noised tokens of −log p_θ(x_i | x̃)/p_i (the trainer divides by the eligible tokens), and the
        MoE aux loss."""
        losses, _, aux = self._losses(model, batch, generator)
        return Loss(losses.sum(), aux)

    def _losses(self, model, batch, generator):
        ids, positions = batch["input_ids"], batch["position_ids"]
        eligible = batch["labels"] != IGNORE_INDEX
        noisy, noised, p = add_noise(ids, eligible, positions, self.settings.mask_token_id, self.settings.epsilon,
                                     generator)
        out = model(noisy, position_ids=positions)
        return masked_losses(out.logits, ids, noised, p), eligible, out.aux_loss

    @torch.no_grad()
    def evaluate(self, model, batches, token_bytes) -> dict:
        """The loss above per eligible token, with the same noise every evaluation (a seeded generator), and its
        bits per byte over text tokens: the ELBO's bound, not an exact figure (`bpb_bound`)."""
        generator = torch.Generator(device=batches[0]["input_ids"].device).manual_seed(0) if batches else None
        nats = count = text_nats = text_bytes = 0.0
        for batch in batches:
            losses, eligible, _ = self._losses(model, batch, generator)
            nbytes = token_bytes[batch["input_ids"]] * eligible
            nats += losses.sum().double().item()
            count += eligible.sum().item()
            text_nats += (losses * (nbytes > 0)).sum().double().item()
            text_bytes += nbytes.sum().item()
        return {"loss": nats / max(count, 1), "bpb_bound": text_nats / (math.log(2) * max(text_bytes, 1))}
