"""Rollouts: sampled trajectories, single-turn or agentic (tool calls answered by whitelisted tools, their
results appended as masked-out tokens, generation continued up to a turn limit). Used by GRPO, PPO and the
generative evaluations."""

from __future__ import annotations

from minimind.infer import Engine, SamplingParams
from minimind.rl.config import RLConfig
from minimind.rl.tools import TOOLS, run_tool
from minimind.tokenizer import parse_output
from minimind.tokenizer.template import THINK_OFF


def trajectories(engine: Engine, prompts: list[list[int]], params: list[SamplingParams], next_params,
                 options: RLConfig) -> list[list[Sample]]:
    """Sample each prompt's group ([prompt][sample]). In agent mode a sample whose turn ends with tool calls
    gets the tools' results and continues, up to options.max_turns turns; the samples waiting for a turn
    decode together, turn t's i-th of them with next_params(t, i)."""
    groups = [[Sample(prompt, c, options.agent) for c in completions]
              for prompt, completions in zip(prompts, engine.generate(prompts, params), strict=True)]
    for turn in range(1, options.max_turns if options.agent else 1):
        waiting = [s for group in groups for s in group if s.pending]
        if not waiting:
            break
        for sample in waiting:
            results = [run_tool(call, options.tools, options.tool_timeout) for call in sample.pending]
            sample.add_tool_results(results, engine.tokenizer)
        outputs = engine.generate([s.tokens for s in waiting], [next_params(turn, i) for i in range(len(waiting))])
        for sample, (completion,) in zip(waiting, outputs, strict=True):
            sample.add(completion, options.agent)
    return groups


def solve(engine: Engine, records: list[dict], params: SamplingParams, options, batch: int = 32) -> list[Sample]:
    """One trajectory per record (agent mode per options.agent, with options.tools offered)."""
    schemas = [TOOLS[name].schema for name in options.tools] if options.agent else None
    samples = []
    for first in range(0, len(records), batch):
        chunk = records[first:first + batch]
        prompts = [engine.chat_prompt(r["messages"], schemas or r["tools"]) for r in chunk]
        samples += [g[0] for g in trajectories(engine, prompts, [params] * len(chunk), lambda t, i: params, options)]
    return samples


class Sample:
    """One sampled trajectory: its tokens (prompt included), which of them are trained (the model's own:
    mask 1; prompt and tool results: 0), the sampler's log-probs, and each turn's text."""

    def __init__(self, prompt: list[int], completion, agent: bool):
        self.tokens, self.mask, self.logps = list(prompt), [0] * len(prompt), [0.0] * len(prompt)
        self.texts, self.pending, self.calls, self.errors = [], [], 0, 0
        self.add(completion, agent)

    @property
    def generated(self) -> int:
        return sum(self.mask)

    def tool_record(self) -> dict:
        """What rewards may read of the trajectory besides its final text."""
        return {"tool_calls": self.calls, "tool_errors": self.errors}

    def add(self, completion, agent: bool) -> None:
        self.tokens += completion.token_ids
        self.mask += [1] * len(completion.token_ids)
        self.logps += completion.logprobs or [0.0] * len(completion.token_ids)
        self.texts.append(completion.text)
        ended = completion.finish_reason == "stop"
        self.pending = parse_output(completion.text).tool_calls if agent and ended else []

    def add_tool_results(self, results: list[str], tokenizer) -> None:
        """The template's tool turn and the next generation prompt, appended as tokens (masked out): the
        sequence stays exactly what was sampled, with no re-rendering."""
        self.calls += len(results)
        self.errors += sum(r.startswith("error:") for r in results)
        text = ("\n<|im_start|>user" + "".join(f"\n<tool_response>\n{r}\n</tool_response>" for r in results)
                + "<|im_end|>\n<|im_start|>assistant\n" + THINK_OFF)
        ids = tokenizer.encode(text)
        self.tokens += ids
        self.mask += [0] * len(ids)
        self.logps += [0.0] * len(ids)
        self.pending = []
