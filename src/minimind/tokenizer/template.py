"""The chat template in Python: the same text as chat_template.jinja, plus which characters are trained.

    [<|im_start|>system\\n{system}{# Tools …}<|im_end|>\\n]
    <|im_start|>user\\n{content}<|im_end|>\\n
    <|im_start|>assistant\\n[<think>\\n{reasoning}\\n</think>\\n\\n]{content}[\\n<tool_call>\\n{json}\\n</tool_call>…]<|im_end|>\\n
    <|im_start|>user\\n<tool_response>\\n{result}\\n</tool_response>…<|im_end|>\\n      (consecutive tool messages)
    <|im_start|>assistant\\n[<think>\\n\\n</think>\\n\\n]                               (generation prompt)

An assistant turn after the last user message always carries a think block (empty without reasoning), so a
reply generated with thinking off re-renders to exactly the tokens it was generated from; earlier assistant
turns drop their reasoning, as Qwen3 does. The trained span of an assistant turn starts after
"<|im_start|>assistant\\n" and ends with its "<|im_end|>" (the newline after it is not trained).
"""

from __future__ import annotations

import json
from importlib import resources

IMAGE_PAD = "<|image_pad|>"       # one image position (id 12): a vision model's features replace its embedding
JINJA = resources.files("minimind.tokenizer").joinpath("chat_template.jinja").read_text()

TOOLS_HEADER = ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
                "You are provided with function signatures within <tools></tools> XML tags:\n<tools>")
TOOLS_FOOTER = ("\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
                "<tool_call></tool_call> XML tags:\n<tool_call>\n"
                '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n')
THINK_OFF = "<think>\n\n</think>\n\n"


def tojson(value) -> str:
    """transformers' `tojson` filter: json.dumps without ASCII escaping."""
    return json.dumps(value, ensure_ascii=False)


def render(messages: list[dict], tools: list[dict] | None = None, add_generation_prompt: bool = False,
           enable_thinking: bool = False) -> tuple[str, list[tuple[int, int]]]:
    """Render a conversation → (text, trained character spans [(start, end), …])."""
    parts: list[tuple[str, bool]] = []          # (text, trained)

    def emit(text: str, trained: bool = False) -> None:
        parts.append((text, trained))

    if tools:
        emit("<|im_start|>system\n")
        if messages and messages[0]["role"] == "system":
            emit(messages[0]["content"] + "\n\n")
        emit(TOOLS_HEADER + "".join("\n" + tojson(tool) for tool in tools) + TOOLS_FOOTER)
    elif messages and messages[0]["role"] == "system":
        emit("<|im_start|>system\n" + messages[0]["content"] + "<|im_end|>\n")

    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    for i, message in enumerate(messages):
        role = message["role"]
        content = _text(message.get("content"))
        if role == "user" or (role == "system" and i > 0):
            emit(f"<|im_start|>{role}\n{content}<|im_end|>\n")
        elif role == "assistant":
            emit("<|im_start|>assistant\n")
            emit(_assistant_body(message, content, with_think=i > last_user), trained=True)
            emit("\n")
        elif role == "tool":
            if i == 0 or messages[i - 1]["role"] != "tool":
                emit("<|im_start|>user")
            emit(f"\n<tool_response>\n{content}\n</tool_response>")
            if i == len(messages) - 1 or messages[i + 1]["role"] != "tool":
                emit("<|im_end|>\n")
    if add_generation_prompt:
        emit("<|im_start|>assistant\n" + ("" if enable_thinking else THINK_OFF))

    text, spans, pos = "", [], 0
    for piece, trained in parts:
        if trained:
            spans.append((pos, pos + len(piece)))
        text += piece
        pos += len(piece)
    return text, spans


def _text(content) -> str:
    """A message's content as text: a string as it is; content parts (OpenAI / transformers processors) joined, an
    image part as one <|image_pad|> and a line break (a processor expands the pad to the image's tokens)."""
    if isinstance(content, str):
        return content
    out = ""
    for part in content if isinstance(content, list) else []:
        if isinstance(part, dict) and part.get("type") == "text":
            out += str(part.get("text", ""))
        elif isinstance(part, dict) and part.get("type") in ("image", "image_url"):
            out += IMAGE_PAD + "\n"
    return out


def _assistant_body(message: dict, content: str, with_think: bool) -> str:
    """From after "<|im_start|>assistant\\n" to "<|im_end|>" inclusive."""
    reasoning = message.get("reasoning_content")
    reasoning = reasoning if isinstance(reasoning, str) else ""
    if "</think>" in content:
        reasoning = content.split("</think>")[0].split("<think>")[-1]
        content = content.split("</think>")[-1].lstrip("\n")
    body = f"<think>\n{reasoning.strip(chr(10))}\n</think>\n\n" if with_think else ""
    body += content
    for j, call in enumerate(message.get("tool_calls") or []):
        if content or j > 0:
            body += "\n"
        call = call.get("function", call)
        arguments = call["arguments"] if isinstance(call["arguments"], str) else tojson(call["arguments"])
        body += f'<tool_call>\n{{"name": "{call["name"]}", "arguments": {arguments}}}\n</tool_call>'
    return body + "<|im_end|>"
