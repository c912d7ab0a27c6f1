"""Model output → reasoning, content and tool calls (the inverse of an assistant turn of the template).

    [<think>\\n]{reasoning}\\n</think>\\n\\n{content}\\n<tool_call>\\n{"name": …, "arguments": {…}}\\n</tool_call>…

A tool call whose JSON does not parse (or lacks a name) stays in the content as plain text: a small model's
malformed output must never raise.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


@dataclass
class ParsedOutput:
    content: str
    reasoning_content: str | None = None
    tool_calls: list[dict] = field(default_factory=list)    # [{"name": str, "arguments": dict}]


def parse_output(text: str) -> ParsedOutput:
    """Split generated assistant text. Reasoning is what precedes "</think>" (the opening tag may be in the
    prompt); without "</think>" an unclosed "<think>" means the model is still reasoning."""
    reasoning = None
    if "</think>" in text:
        reasoning, text = text.split("</think>", 1)
        reasoning = reasoning.split("<think>")[-1].strip("\n")
    elif text.lstrip().startswith("<think>"):
        reasoning, text = text.lstrip()[len("<think>"):].strip("\n"), ""
    text = text.removesuffix("<|im_end|>")

    calls, kept, last = [], [], 0
    for match in TOOL_CALL.finditer(text):
        call = _tool_call(match.group(1))
        if call is not None:
            calls.append(call)
            kept.append(text[last:match.start()])
            last = match.end()
    kept.append(text[last:])
    content = "".join(kept).strip("\n") if calls else text.strip("\n")
    return ParsedOutput(content=content, reasoning_content=reasoning or None, tool_calls=calls)


def _tool_call(body: str) -> dict | None:
    try:
        call = json.loads(body)
    except (ValueError, RecursionError):       # bad JSON, absurd nesting, or an over-long integer
        return None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return None
    arguments = call.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except (ValueError, RecursionError):
            return None
    if not isinstance(arguments, dict):
        return None
    return {"name": call["name"], "arguments": arguments}
