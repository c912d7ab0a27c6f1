"""Rewards for RL: rule-based verifiers, the reward model, and user functions, combined with weights.

Every reward has the batch signature

    reward(completions: list[str], records: list[dict]) -> list[float]

where completions are the generated assistant texts and records the prompts' records ({"messages", "tools",
"answer"}). The configuration names rewards with weights, e.g. {"accuracy": 1.0, "repetition": 0.5,
"mypackage.rewards:brevity": 0.2}; the total is Σ weight · reward. Built in:

    accuracy     1 if the answer equals the record's: the number after "####", else the last number in the text
    think_format 1 if the text has one "</think>" with reasoning before it and an answer after, else 0
    length       0 inside [min_chars, max_chars] of answer text, else -1
    repetition   -(fraction of repeated word 3-grams), in [-1, 0]
    tool_use     agent rollouts: 1 if the trajectory called a tool and no call failed, else 0 (the record
                 carries "tool_calls" and "tool_errors")
    reward_model the score of a reward model directory (config key rl.reward_model), the conversation with the
                 completion appended

A name with a colon, "module:function", imports a user function with the signature above.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import torch

from minimind.errors import MiniMindError
from minimind.model import RewardModel, load_reward_model
from minimind.rl.tools import import_function
from minimind.tokenizer import load_tokenizer, tokenizer_dir

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
FINAL = re.compile(r"####\s*(-?\d[\d,]*(?:\.\d+)?)")
Reward = Callable[[list[str], list[dict]], list[float]]


def extract_answer(text: str) -> str | None:
    """The final numeric answer: after the last "####", else the last number in the text (commas dropped)."""
    final = FINAL.findall(text)
    numbers = final or NUMBER.findall(text.split("</think>")[-1])
    return numbers[-1].replace(",", "") if numbers else None


def same_number(a: str | None, b: str | None, tolerance: float = 1e-9) -> bool:
    if a is None or b is None:
        return False
    try:
        x, y = float(a), float(b)
    except ValueError:
        return a.strip() == b.strip()
    return math.isclose(x, y, rel_tol=tolerance, abs_tol=tolerance)


def accuracy(completions: list[str], records: list[dict]) -> list[float]:
    """1 when the final answer equals the record's `answer` (numerically where both are numbers); for a record with
    `gt` (the reference's agentic layout), the fraction of its items found in the text after the last tool call."""
    return [found(c, r["gt"]) if r.get("gt") else float(same_number(extract_answer(c), r.get("answer")))
            for c, r in zip(completions, records, strict=True)]


def found(text: str, items: list[str]) -> float:
    """The fraction of `items` in the final text (after the last "</tool_call>"): as a case-insensitive substring,
    or as a number equal to one in the text within 1e-6."""
    final = text.split("</tool_call>")[-1].split("</think>")[-1]
    numbers = [n.replace(",", "") for n in NUMBER.findall(final)]
    hits = [item.lower() in final.lower() or any(same_number(item, n, 1e-6) for n in numbers) for item in items]
    return sum(hits) / len(items)


ANSWER_REWARDS = {"accuracy"}             # rewards that read each record's answer (or gt)


def think_format(completions: list[str], records: list[dict]) -> list[float]:
    out = []
    for text in completions:
        reasoning, _, answer = text.partition("</think>")
        ok = text.count("</think>") == 1 and reasoning.replace("<think>", "").strip() and answer.strip()
        out.append(float(bool(ok)))
    return out


def length(completions: list[str], records: list[dict], min_chars: int = 5, max_chars: int = 800) -> list[float]:
    return [0.0 if min_chars <= len(c.split("</think>")[-1].strip()) <= max_chars else -1.0 for c in completions]


def repetition(completions: list[str], records: list[dict], n: int = 3) -> list[float]:
    out = []
    for text in completions:
        words = text.split()
        grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        out.append(-(1 - len(set(grams)) / len(grams)) if grams else 0.0)
    return out


def tool_use(completions: list[str], records: list[dict]) -> list[float]:
    return [float(r.get("tool_calls", 0) > 0 and r.get("tool_errors", 0) == 0) for r in records]


BUILT_IN: dict[str, Reward] = {"accuracy": accuracy, "think_format": think_format, "length": length,
                               "repetition": repetition, "tool_use": tool_use}


class RewardScorer:
    """Rewards for whole conversations: `RewardScorer.load(DIR).score([[{"role": "user", …}, {"role": "assistant",
    …}], …])` → [float, …]."""

    def __init__(self, model: RewardModel, tokenizer, batch_size: int = 16):
        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None, batch_size: int = 16) -> RewardScorer:
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


def reward_model(directory: str, device=None) -> Reward:
    """The reward model at `directory` as a reward: its score of the prompt's conversation plus the answer."""
    scorer = RewardScorer.load(directory, device=device)

    def score(completions: list[str], records: list[dict]) -> list[float]:
        conversations = [[*r["messages"], {"role": "assistant", "content": c}]
                         for c, r in zip(completions, records, strict=True)]
        return scorer.score(conversations, tools=[r.get("tools") for r in records])
    return score


def resolve(name: str, reward_model_dir: str = "", device=None) -> Reward:
    """A reward by its configured name (see the module docstring)."""
    if name in BUILT_IN:
        return BUILT_IN[name]
    if name == "reward_model":
        if not reward_model_dir:
            raise MiniMindError("reward 'reward_model' needs config key 'rl.reward_model' (a reward model directory)")
        return reward_model(reward_model_dir, device)
    if ":" in name:
        return import_function(name, f"reward {name!r}")
    raise MiniMindError(f"unknown reward {name!r}: use one of {', '.join([*BUILT_IN, 'reward_model'])} "
                        "or 'module:function'")


class Rewards:
    """Weighted rewards: `Rewards({"accuracy": 1.0, …})(completions, records)` → (totals, {name: values})."""

    def __init__(self, weights: dict[str, float], reward_model_dir: str = "", device=None):
        if not weights:
            raise MiniMindError("config key 'rl.rewards' must name at least one reward")
        self.weights = weights
        self.functions = {name: resolve(name, reward_model_dir, device) for name in weights}

    def __call__(self, completions: list[str], records: list[dict]) -> tuple[list[float], dict[str, list[float]]]:
        parts = {}
        for name, fn in self.functions.items():
            values = [float(v) for v in fn(completions, records)]
            if len(values) != len(completions):
                raise MiniMindError(f"reward {name!r} returned {len(values)} values for {len(completions)} completions")
            parts[name] = values
        totals = [sum(self.weights[name] * parts[name][i] for name in parts) for i in range(len(completions))]
        return totals, parts
