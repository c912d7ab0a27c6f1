"""Generative evaluation: answers are generated, then checked.

    arithmetic   exact match of the final number (after "####", else the last number) with the record's answer,
                 greedy by default; also the share of answers in the trained "#### N" format
    tools        the same problems with the calculator offered: the model may emit <tool_call> JSON, the call
                 runs (rl.tools), its result comes back as a tool turn, up to max_turns turns. Reported: the
                 rate of correct answers reached through error-free tool calls (the tool-use success rate),
                 plain accuracy, and how often a tool was called.
The sampling settings are returned with the figures.
"""

from __future__ import annotations

from pathlib import Path

from minimind.data.formats import read_records
from minimind.errors import MiniMindError
from minimind.eval.stats import estimate
from minimind.infer import DiffusionParams, SamplingParams, engine_for
from minimind.rl.rewards import FINAL, accuracy
from minimind.rl.rollouts import solve


def read_problems(path: str | Path, limit: int | None = None) -> list[dict]:
    """The first `limit` records of a file in the rl layout ({"conversations": [...], "answer"})."""
    records = []
    for number, record in enumerate(read_records(path, "rl"), 1):
        if record["answer"] is None:
            raise MiniMindError(f"{path}: record {number} has no 'answer' to check against")
        records.append(record)
        if limit and len(records) == limit:
            break
    return records


def evaluate_generative(model, tokenizer, records: list[dict], agent: bool = False, tools: tuple[str, ...] = (
        "calculator",), max_new_tokens: int = 256, max_turns: int = 3, temperature: float = 0.0,
        seed: int = 0, diffusion: DiffusionParams | None = None) -> dict:
    """Exact final answers through the engine that samples the model (a diffusion model: its sampler with
    `diffusion`'s settings)."""
    from minimind.rl.config import RLConfig
    from minimind.rl.tools import resolve_record_tools

    options = RLConfig(agent=agent, tools=list(tools), max_turns=max_turns)
    options.validate()
    if agent:
        resolve_record_tools(records, {})          # a record's own tool without an implementation is refused
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    samples = solve(engine_for(model.eval(), tokenizer, diffusion=diffusion), records, params, options)
    texts = [s.texts[-1] for s in samples]
    correct = accuracy(texts, records)
    out = {"n": len(records), "accuracy": estimate(correct).to_dict(),
           "formatted": float(sum(bool(FINAL.search(t)) for t in texts) / len(texts)),
           "length": sum(s.generated for s in samples) / len(samples),
           "sampling": {"max_new_tokens": max_new_tokens, "temperature": temperature, "seed": seed}}
    if agent:
        success = [float(c > 0 and s.calls > 0 and s.errors == 0) for c, s in zip(correct, samples, strict=True)]
        out |= {"tool_success": estimate(success).to_dict(),
                "called_tool": sum(s.calls > 0 for s in samples) / len(samples),
                "tool_errors": sum(s.errors for s in samples) / max(1, sum(s.calls for s in samples)),
                "tools": list(tools), "max_turns": max_turns}
    out["examples"] = [{"prompt": r["messages"][-1]["content"], "answer": r["answer"],
                        "output": s.texts} for r, s in zip(records[:5], samples, strict=False)]
    return out
