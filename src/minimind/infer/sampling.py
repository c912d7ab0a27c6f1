"""Sampling parameters and the logits → next-token step, for a batch of rows at once.

    logits ← penalties(logits)        repetition (prompt + output), presence and frequency (output only)
    greedy if temperature == 0, else:
    logits ← logits / temperature;  keep top_k;  keep the smallest set with mass ≥ top_p;  drop p < min_p·p_max
    next ~ softmax(logits), each row with its own seeded generator (Gumbel-max: argmax(logits + Gumbel noise))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from minimind.errors import MiniMindError


@dataclass
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 1.0           # 0 = greedy
    top_k: int = 0                     # 0 = off
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0    # > 1 discourages every token already in the prompt or output
    presence_penalty: float = 0.0      # subtracted once from tokens the output already has
    frequency_penalty: float = 0.0     # subtracted per occurrence in the output
    seed: int | None = None            # sample j of a prompt uses seed + j
    stop: list[str] = field(default_factory=list)            # stop strings (not included in the text)
    stop_token_ids: list[int] = field(default_factory=list)  # besides the tokenizer's end-of-turn token
    ignore_eos: bool = False           # keep going past the end-of-turn token (benchmarks, tests)
    logprobs: int | None = None        # None: no log-probs; k ≥ 0: the chosen token's and the top k
    n: int = 1                         # samples per prompt, sharing the prompt's prefill

    def validate(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        checks = [
            (all(isinstance(s, str) and s for s in self.stop), "stop strings must be non-empty"),
            (all(math.isfinite(v) for v in (self.temperature, self.top_p, self.min_p, self.repetition_penalty,
                                            self.presence_penalty, self.frequency_penalty)),
             "sampling values must be finite"),
            (self.seed is None or 0 <= self.seed < 2**62, "seed must be in 0..2**62"),
            (self.max_new_tokens >= 1, "max_new_tokens must be ≥ 1"),
            (self.temperature >= 0, "temperature must be ≥ 0"),
            (self.top_k >= 0, "top_k must be ≥ 0"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (0 <= self.min_p < 1, "min_p must be in [0, 1)"),
            (self.repetition_penalty > 0, "repetition_penalty must be > 0"),
            (-2 <= self.presence_penalty <= 2, "presence_penalty must be in [-2, 2]"),
            (-2 <= self.frequency_penalty <= 2, "frequency_penalty must be in [-2, 2]"),
            (self.n >= 1, "n must be ≥ 1"),
            (self.logprobs is None or 0 <= self.logprobs <= 20, "logprobs must be in 0..20"),
        ]
        for ok, message in checks:
            if not ok:
                raise MiniMindError(f"invalid sampling value: {message}")


def apply_penalties(logits: torch.Tensor, seen: torch.Tensor, counts: torch.Tensor,
                    params: SamplingParams) -> torch.Tensor:
    """logits [R, V] fp32; seen [R, V] bool (prompt + output); counts [R, V] (output occurrences)."""
    if params.repetition_penalty != 1.0:
        penalised = torch.where(logits > 0, logits / params.repetition_penalty, logits * params.repetition_penalty)
        logits = torch.where(seen, penalised, logits)
    if params.presence_penalty:
        logits = logits - params.presence_penalty * (counts > 0)
    if params.frequency_penalty:
        logits = logits - params.frequency_penalty * counts
    return logits


def filter_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature, top-k, top-p and min-p on logits [R, V]; removed entries become -inf."""
    logits = logits / params.temperature
    if params.top_k and params.top_k < logits.shape[-1]:
        kth = logits.topk(params.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative - sorted_logits.softmax(dim=-1) >= params.top_p    # mass before this token ≥ top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    if params.min_p > 0:
        probs = logits.softmax(dim=-1)
        logits = logits.masked_fill(probs < params.min_p * probs.max(dim=-1, keepdim=True).values, float("-inf"))
    return logits


def sample(logits: torch.Tensor, params: SamplingParams, generators: list[torch.Generator | None]) -> torch.Tensor:
    """Next token ids [R] from processed logits [R, V]: argmax when greedy, else Gumbel-max with one generator
    per row, so that a row's draw does not depend on the other rows of the batch."""
    if params.temperature == 0:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits, params)
    noise = torch.stack([torch.rand(logits.shape[-1], generator=g, device=logits.device) for g in generators])
    gumbel = -torch.log(-torch.log(noise.clamp(min=1e-20)))
    return (logits + gumbel).argmax(dim=-1)
