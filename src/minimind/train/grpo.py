"""GRPO and its family (Dr. GRPO, DAPO, CISPO) as a stage of the one trainer.

A rollout samples `rl.group_size` answers to each of `rl.prompts_per_rollout` prompts (per rank) with the
inference engine — a prompt's samples share its prefill — scores them with the configured rewards, and turns
the rewards into group-normalised advantages. Log-probabilities recorded while sampling are compared, as a
diagnostic, with the "old" log-probs the loss uses, which are recomputed (in fp32 from the logits) by the same
forward — same dtype, same autocast — as the loss's, so that ρ = 1 exactly before the first update. The rollout
is then trained on `rl.num_iterations` times, each pass split into `rl.mini_batches` optimiser steps, so from the
second step on the policy has moved, ρ ≠ 1 and the clip acts. Then the next rollout.

    per token  ℓ_t = clip or cispo policy loss (minimind.rl.losses) + kl_coef · k3(π_θ, π_ref)
    per step   aggregated by token, sequence or Dr. GRPO's constant (rl.aggregation)

DAPO's pieces are options: asymmetric clip (eps_low, eps_high), dynamic sampling (groups whose rewards are all
equal carry no signal; up to `grpo.max_refills` extra draws of prompts replace them), and the soft overlong penalty
(answers within `overlong_buffer` tokens of max_new_tokens lose up to `overlong_penalty`).

Resuming: the loader's position (epoch, rollout, step within the rollout) is saved with each checkpoint and
every rollout's sampling is seeded by its index, so a checkpoint taken between rollouts resumes exactly; one
taken inside a rollout resumes by re-sampling that rollout from the saved policy.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from minimind.data.loader import TokenData
from minimind.errors import MiniMindError
from minimind.infer import Engine, SamplingParams
from minimind.model.loss import token_entropy, token_logprobs
from minimind.rl.config import GRPOConfig, RLConfig
from minimind.rl.losses import aggregate, group_advantages, k3, policy_loss
from minimind.rl.rewards import ANSWER_REWARDS, Rewards, accuracy
from minimind.rl.rollouts import chat_prompts, solve, trajectories
from minimind.rl.tools import resolve_record_tools, start_worker
from minimind.train.stages import Loss, Stage, StageData


def token_logps(model, input_ids: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """[B, T] → [B, T]: log p(input_ids[t] | < t) in fp32 (0 at t = 0), `chunk` rows per forward."""
    return torch.cat([token_logprobs(model(ids).logits, ids) for ids in input_ids.split(chunk)])


def check_answers(records: list[dict], rewards: dict[str, float], files: list[str]) -> None:
    """Refuse, before step 1, an answer-based reward over records that carry no answer: every such sample would
    earn 0 and teach nothing (the reference's rlaif.jsonl holds prompts whose last turn is a placeholder)."""
    needs = sorted(set(rewards) & ANSWER_REWARDS)
    missing = sum(1 for r in records if r.get("answer") is None and not r.get("gt"))
    if needs and missing:
        raise MiniMindError(
            f"{', '.join(files)}: {missing:,} of {len(records):,} records carry no 'answer' (or 'gt'), which the "
            f"reward {needs[0]!r} compares against; give them answers, or train on them with a reward model: "
            "`minimind reward-model --config configs/tiny/reward.yaml`, then "
            "rl.rewards='{\"reward_model\": 1.0}' rl.reward_model=runs/tiny/reward/model")


def overlong(lengths: list[int], max_new_tokens: int, buffer: int, penalty: float) -> list[float]:
    """DAPO's soft overlong penalty: 0 up to max - buffer tokens, then falling linearly to -penalty at max."""
    if buffer == 0:
        return [0.0] * len(lengths)
    start = max_new_tokens - buffer
    return [-penalty * min(1.0, max(0, n - start) / buffer) for n in lengths]


class GRPO(Stage):
    generative = True
    trains_on_targets = False                # prompts only: the rollouts make the targets

    def __init__(self, config):
        self.config = config
        self.options: RLConfig = config.rl
        self.group: GRPOConfig = config.grpo
        self.rewards: Rewards | None = None
        self.reference = None
        self.records: dict[str, list[dict]] = {}
        self.log: dict = {}

    @staticmethod
    def pack(doc_lengths, seq_len):
        return list(range(len(doc_lengths)))          # a "row" is one prompt

    def build(self, config, tokenizer_dir, main, barrier) -> StageData:
        data = super().build(config, tokenizer_dir, main, barrier)
        root = self.prepared_root(config)
        for split in ("train", "val") if data.val is not None else ("train",):
            with open(root / split / "records.jsonl", encoding="utf-8") as f:
                self.records[split] = [json.loads(line) for line in f]
        return data

    def setup(self, model, data, config, device, autocast) -> None:
        self.autocast = autocast
        check_answers(self.records["train"], self.options.rewards, config.data.train)
        if self.options.agent:
            resolve_record_tools([r for split in self.records.values() for r in split], self.options.tool_functions)
            start_worker()
        self.rewards = Rewards(self.options.rewards, self.options.reward_model, device)
        if self.options.kl_coef > 0:
            self.reference = self.frozen_start(config.model, config, device)

    def loader(self, model, tokenizer, data, config, info, device):
        self.tokenizer = tokenizer                         # evaluate's engine needs it too
        return RolloutLoader(self, self.policy(model), tokenizer, data.train, self.records["train"], config, info,
                             device)

    def advantages(self, rewards: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What the loss needs beyond the rollout's tokens and log-probs: here group-normalised advantages [N]."""
        return {"advantages": group_advantages(rewards, self.options.group_size, self.group.scale_std)}

    def validation(self, data, config, device) -> list:
        return self.records.get("val", [])[:self.options.eval_prompts]

    # ---- the loss -----------------------------------------------------------------------------------------

    def count(self, batch):
        o = self.options
        return aggregate(torch.zeros_like(batch["old_logps"]), batch["mask"], o.aggregation, o.max_new_tokens)[1]

    def loss(self, model, batch):
        o = self.options
        logits = model(batch["input_ids"]).logits
        logps = token_logprobs(logits, batch["input_ids"])
        mask = batch["mask"]
        per_token, clipped = policy_loss(logps, batch["old_logps"], batch["advantages"][:, None], o.loss,
                                         o.eps_low, o.eps_high, o.cispo_eps_high)
        kl = k3(logps, batch["ref_logps"]) if o.kl_coef > 0 else torch.zeros_like(logps)
        total, units = aggregate(per_token + o.kl_coef * kl, mask, o.aggregation, o.max_new_tokens)
        tokens = mask.sum().clamp(min=1)
        metrics = {name: (value * mask).sum() / tokens * units for name, value in
                   (("clip_fraction", clipped.float()), ("kl", kl.detach()),
                    ("ratio", torch.exp(logps - batch["old_logps"]).detach()), ("entropy", token_entropy(logits)))}
        return Loss(total, torch.zeros((), device=total.device), metrics)

    def step_log(self) -> dict:
        return self.log

    # ---- evaluation ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, model, records, token_bytes) -> dict:
        """Greedy answers to the held-out prompts (in agent mode with the tools, over several turns): exact
        accuracy, the configured reward, the generated length; in agent mode also the tool calls per answer
        and the rate of correct answers reached through error-free tool calls."""
        o = self.options
        params = SamplingParams(max_new_tokens=o.max_new_tokens, temperature=0.0)
        samples = solve(Engine(model, self.tokenizer), records, params, o)
        model.train()
        texts = [s.texts[-1] for s in samples]
        totals, _ = self.rewards(texts, [r | s.tool_record() for r, s in zip(records, samples, strict=True)])
        correct = accuracy(texts, records)
        out = {"accuracy": float(np.mean(correct)), "reward": float(np.mean(totals)),
               "length": float(np.mean([s.generated for s in samples]))}
        if o.agent:
            out |= {"tool_calls": float(np.mean([s.calls for s in samples])),
                    "correct_with_tool": float(np.mean([c > 0 and s.calls > 0 and s.errors == 0
                                                        for c, s in zip(correct, samples, strict=True)]))}
        return out


class RolloutLoader:
    """Training micro-batches made from rollouts: {"input_ids", "mask", "old_logps", "ref_logps",
    "advantages"}. Prompts are visited in a seeded order per epoch, each rank taking its own share."""

    def __init__(self, stage: GRPO, model, tokenizer, prompts: TokenData, records: list[dict], config, info,
                 device):
        o = stage.options
        self.stage, self.model, self.tokenizer, self.prompts, self.records = stage, model, tokenizer, prompts, records
        self.options, self.seed, self.device = o, config.seed, device
        self.rank, self.world_size = info.rank, info.world_size
        self.steps_per_rollout = o.num_iterations * o.mini_batches
        self.rollouts_per_epoch = len(records) // (o.prompts_per_rollout * info.world_size)
        if self.rollouts_per_epoch == 0:
            raise MiniMindError(f"{len(records)} prompts are fewer than rl.prompts_per_rollout × processes")
        self.steps_per_epoch = self.rollouts_per_epoch * self.steps_per_rollout
        self.epoch, self.rollout, self.position, self.buffer = 0, 0, 0, None
        self.out, self.vllm = Path(config.out), None

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self.buffer is None:
            self.buffer = self._rollout()
        o = self.options
        iteration, part = divmod(self.position, o.mini_batches)
        n = len(self.buffer["advantages"])
        order = torch.from_numpy(np.random.default_rng([self.seed, self.epoch, self.rollout, iteration])
                                 .permutation(n))
        rows = order[part::o.mini_batches].to(self.device)
        batch = {k: v[rows] for k, v in self.buffer.items()}
        self.position += 1
        if self.position == self.steps_per_rollout:
            self.position, self.buffer = 0, None
            self.rollout += 1
            if self.rollout == self.rollouts_per_epoch:
                self.epoch, self.rollout = self.epoch + 1, 0
        return batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "rollout": self.rollout, "position": self.position, "seed": self.seed,
                "world_size": self.world_size, "num_prompts": len(self.records)}

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "world_size", "num_prompts"):
            if state.get(key) != self.state_dict()[key]:
                raise MiniMindError(f"loader state: {key} = {state.get(key)!r}, but this run has "
                                    f"{self.state_dict()[key]!r}")
        self.epoch, self.rollout, self.position, self.buffer = state["epoch"], state["rollout"], state["position"], None

    # ---- one rollout --------------------------------------------------------------------------------------

    def _prompt_ids(self, epoch: int, rollout: int, draw: int) -> list[int]:
        """This rank's prompts of (epoch, rollout): a slice of the epoch's seeded order; dynamic sampling's
        extra draws (draw > 0) come from an order of their own."""
        P = self.options.prompts_per_rollout
        if draw:
            order = np.random.default_rng([self.seed, epoch, rollout, draw]).permutation(len(self.records))
            return order[self.rank * P:(self.rank + 1) * P].tolist()
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.records))
        first = (rollout * self.world_size + self.rank) * P
        return order[first:first + P].tolist()

    @torch.no_grad()
    def _sample(self, prompt_ids: list[int], draw: int) -> list[dict]:
        """Each prompt's group: {"samples": [Sample] × G, "rewards", "parts"}. In agent mode a sample whose
        turn ends with tool calls gets the tools' results (masked out of the loss) and continues, up to
        rl.max_turns turns; all samples waiting for a turn decode together."""
        o = self.options
        engine = self._engine()
        records = [self.records[d] for d in prompt_ids]
        if o.agent:
            prompts, allowed = chat_prompts(engine, records, o)
        else:                                                       # the prepared prompts, no tools
            prompts, allowed = [self.prompts.doc(d)[0].astype(np.int64).tolist() for d in prompt_ids], None
        key = (self.seed, self.epoch, self.rollout, draw)
        with self.stage.autocast:
            groups = trajectories(engine, prompts, [self._params(o.group_size, hash((*key, d)) % 2**31)
                                                    for d in prompt_ids],
                                  lambda turn, i: self._params(1, hash((*key, turn, i)) % 2**31), o, allowed)
        self.model.train()
        out = []
        for record, samples in zip(records, groups, strict=True):
            rewards, parts = self.stage.rewards([s.texts[-1] for s in samples],
                                                [record | s.tool_record() for s in samples])
            penalty = overlong([s.generated for s in samples], o.max_new_tokens, o.overlong_buffer,
                               o.overlong_penalty)
            out.append({"samples": samples, "parts": parts,
                        "rewards": [r + p for r, p in zip(rewards, penalty, strict=True)]})
        return out

    def _engine(self):
        """The built-in engine on the policy; or vLLM, started once from the policy saved under OUT/vllm-init-rank{r}
        and given the policy's current weights before every rollout."""
        if self.options.rollout_backend == "engine":
            return Engine(self.model, self.tokenizer)
        if self.vllm is None:
            from minimind.rl.vllm_rollouts import VLLMEngine

            start = self.model.save(self.out / f"vllm-init-rank{self.rank}", tokenizer=self.tokenizer)
            self.vllm = VLLMEngine(start, self.tokenizer, self.options.vllm_gpu_memory,
                                   self.model.config.max_position_embeddings)
        self.vllm.sync(self.model)
        return self.vllm

    def _params(self, n: int, seed: int) -> SamplingParams:
        o = self.options
        return SamplingParams(max_new_tokens=o.max_new_tokens, temperature=o.temperature, top_p=o.top_p, n=n,
                              logprobs=0, seed=seed)


    @torch.no_grad()
    def _rollout(self) -> dict[str, torch.Tensor]:
        o = self.options
        start = time.perf_counter()
        groups = self._sample(self._prompt_ids(self.epoch, self.rollout, 0), 0)
        zero_variance = float(np.mean([len(set(g["rewards"])) == 1 for g in groups]))
        drawn = float(np.mean([r for g in groups for r in g["rewards"]]))     # the policy's, before any filter
        all_groups = list(groups)
        if self.stage.group.dynamic_sampling:
            groups = [g for g in groups if len(set(g["rewards"])) > 1]
            for draw in range(1, self.stage.group.max_refills + 1):
                if len(groups) >= o.prompts_per_rollout:
                    break
                extra = self._sample(self._prompt_ids(self.epoch, self.rollout, draw), draw)
                all_groups += extra
                groups += [g for g in extra if len(set(g["rewards"])) > 1]
            groups = groups[:o.prompts_per_rollout] or all_groups[:o.prompts_per_rollout]
        sample_seconds = time.perf_counter() - start

        samples = [sample for g in groups for sample in g["samples"]]
        width = max(len(s.tokens) for s in samples)
        input_ids = torch.full((len(samples), width), self.tokenizer.pad_id, dtype=torch.long)
        mask, sampled = torch.zeros((len(samples), width)), torch.zeros((len(samples), width))
        for i, sample in enumerate(samples):
            n = len(sample.tokens)
            input_ids[i, :n] = torch.tensor(sample.tokens)
            mask[i, :n] = torch.tensor(sample.mask, dtype=torch.float32)
            sampled[i, :n] = torch.tensor(sample.logps)
        input_ids, mask, sampled = input_ids.to(self.device), mask.to(self.device), sampled.to(self.device)
        rewards = torch.tensor([r for g in groups for r in g["rewards"]], device=self.device)
        with self.stage.autocast:                         # the loss's own forward: ρ = 1 before any update
            old_logps = token_logps(self.model, input_ids)
            ref_logps = (token_logps(self.stage.reference, input_ids) if self.stage.reference is not None
                         else torch.zeros_like(old_logps))

        lengths = mask.sum(dim=1)
        tokens = int(lengths.sum())
        self.stage.log = {
            "reward_mean": rewards.mean().item(), "reward_std": rewards.std().item(), "reward_drawn": drawn,
            "zero_variance_groups": zero_variance, "response_length": lengths.mean().item(),
            "rollout_tokens_per_s": tokens / max(sample_seconds, 1e-9),
            "sampled_logp_error": ((sampled - old_logps).abs() * mask).sum().item() / max(tokens, 1),
        } | {f"reward_{name}": float(np.mean([v for g in groups for v in g["parts"][name]]))
             for name in o.rewards}
        if o.agent:
            correct = [v for g in groups for v in g["parts"].get("accuracy", [0.0] * len(g["samples"]))]
            self.stage.log |= {
                "tool_calls": float(np.mean([s.calls for s in samples])),
                "tool_errors": float(np.mean([s.errors for s in samples])),
                "correct_with_tool": float(np.mean([c > 0 and s.calls > 0 and s.errors == 0
                                                    for c, s in zip(correct, samples, strict=True)]))}
        batch = {"input_ids": input_ids, "mask": mask, "old_logps": old_logps, "ref_logps": ref_logps}
        return batch | self.stage.advantages(rewards, batch)
