"""Rollouts: sampled trajectories, single-turn or agentic (tool calls answered by whitelisted tools, their
results appended as masked-out tokens, generation continued up to a turn limit). Used by GRPO, PPO and the
generative evaluations."""

from __future__ import annotations

from minimind.infer import Engine, SamplingParams
from minimind.rl.config import RLConfig
from minimind.rl.tools import TOOLS, run_tool, tool_name
from minimind.tokenizer import parse_output
from minimind.tokenizer.template import THINK_OFF


def offered(record: dict, options: RLConfig) -> tuple[list[dict], list[str]]:
    """The tools a prompt offers in agent mode, as (schemas for the prompt, names a call may use): the record's own
    tool schemas where it carries some (the reference's agentic data), else the configured `rl.tools`."""
    if record.get("tools"):
        return record["tools"], [tool_name(s) for s in record["tools"]]
    return [TOOLS[name].schema for name in options.tools], list(options.tools)


def chat_prompts(engine: Engine, records: list[dict], options: RLConfig) -> tuple[list[list[int]], list[list[str]]]:
    """The records' generation prompts and, per prompt, the tools a call may use: in agent mode the tools `offered`
    offers, shown in the prompt; otherwise the record's own schemas in the prompt and no tool runs."""
    tools = [offered(r, options) if options.agent else (r["tools"], []) for r in records]
    prompts = [engine.chat_prompt(r["messages"], schemas) for r, (schemas, _) in zip(records, tools, strict=True)]
    return prompts, [names for _, names in tools]


def trajectories(engine: Engine, prompts: list[list[int]], params: list[SamplingParams], next_params,
                 options: RLConfig, allowed: list[list[str]] | None = None) -> list[list[Sample]]:
    """Sample each prompt's group ([prompt][sample]). In agent mode a sample whose turn ends with tool calls
    gets the results of those among its prompt's `allowed` tools (default: rl.tools) and continues, up to
    options.max_turns turns; the samples waiting for a turn decode together, turn t's i-th with next_params(t, i)."""
    allowed = allowed or [list(options.tools)] * len(prompts)
    groups = [[Sample(prompt, c, options.agent, names) for c in completions]
              for prompt, completions, names in zip(prompts, engine.generate(prompts, params), allowed, strict=True)]
    for turn in range(1, options.max_turns if options.agent else 1):
        waiting = [s for group in groups for s in group if s.pending]
        if not waiting:
            break
        for sample in waiting:
            results = [run_tool(call, sample.allowed, options.tool_timeout) for call in sample.pending]
            sample.add_tool_results(results, engine.tokenizer)
        outputs = engine.generate([s.tokens for s in waiting], [next_params(turn, i) for i in range(len(waiting))])
        for sample, (completion,) in zip(waiting, outputs, strict=True):
            sample.add(completion, options.agent)
    return groups


def solve(engine: Engine, records: list[dict], params: SamplingParams, options, batch: int = 32) -> list[Sample]:
    """One trajectory per record (agent mode per options.agent, with the tools `offered` offers)."""
    samples = []
    for first in range(0, len(records), batch):
        chunk = records[first:first + batch]
        prompts, allowed = chat_prompts(engine, chunk, options)
        groups = trajectories(engine, prompts, [params] * len(chunk), lambda t, i: params, options, allowed)
        samples += [g[0] for g in groups]
    return samples


class Sample:
    """One sampled trajectory: its tokens (prompt included), which of them are trained (the model's own:
    mask 1; prompt and tool results: 0), the sampler's log-probs, and each turn's text."""

    def __init__(self, prompt: list[int], completion, agent: bool, allowed: list[str] = ()):
        self.allowed = list(allowed)                 # the tools its calls may use
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
