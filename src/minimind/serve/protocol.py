"""The OpenAI wire format: request bodies (validated), and the pieces of responses and stream chunks.

Extensions beyond OpenAI's fields, as vLLM names them: top_k, min_p, repetition_penalty,
chat_template_kwargs.enable_thinking, and the reference's `open_thinking`.
"""

from __future__ import annotations

import json
import secrets
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from minimind.data.formats import AUDIO_MARKER, IMAGE_MARKER
from minimind.infer import SamplingParams
from minimind.tokenizer import ParsedOutput, Tokenizer


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Body):
    include_usage: bool = False


class _Sampling(_Body):
    model: str
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    min_p: float = Field(0.0, ge=0, lt=1)
    repetition_penalty: float = Field(1.0, gt=0)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    max_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=16)
    seed: int | None = Field(None, ge=0, lt=2**62)
    stream: bool = False
    stream_options: StreamOptions | None = None

    def sampling(self, max_new_tokens: int, logprobs: int | None) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return SamplingParams(max_new_tokens=max_new_tokens, temperature=self.temperature, top_k=self.top_k,
                              top_p=self.top_p, min_p=self.min_p, repetition_penalty=self.repetition_penalty,
                              presence_penalty=self.presence_penalty, frequency_penalty=self.frequency_penalty,
                              seed=self.seed, stop=stop, logprobs=logprobs, n=self.n)


class Function(_Body):
    name: str
    arguments: str | dict = "{}"


class ToolCall(_Body):
    id: str | None = None
    type: Literal["function"] = "function"
    function: Function


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict] | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def as_template(self) -> dict:
        """The dict the chat template reads: text parts joined, an image part as an `<image>` line (its image is in
        `image_urls`, in the same order), an input_audio part as an `<audio>` line (`input_audios`), `developer` as
        `system`."""
        content = self.content
        if isinstance(content, list):
            markers = {"image_url": IMAGE_MARKER + "\n", "input_audio": AUDIO_MARKER + "\n"}
            content = "".join(part.get("text", "") if part.get("type") == "text" else
                              markers.get(part.get("type"), "") for part in content)
        message = {"role": "system" if self.role == "developer" else self.role, "content": content or ""}
        if self.reasoning_content:
            message["reasoning_content"] = self.reasoning_content
        if self.tool_calls:
            message["tool_calls"] = [{"name": c.function.name, "arguments": c.function.arguments}
                                     for c in self.tool_calls]
        return message


    def image_urls(self, where: str) -> list[tuple[str, str]]:
        """(where, url) of each image_url part, in order (`url` a string or {"url": …})."""
        out = []
        for k, part in enumerate(self.content if isinstance(self.content, list) else []):
            if part.get("type") == "image_url":
                url = part.get("image_url")
                url = url.get("url") if isinstance(url, dict) else url
                out.append((f"{where}.content[{k}].image_url", url))
        return out


    def input_audios(self, where: str) -> list[tuple[str, str]]:
        """(where, base64 data) of each input_audio part ({"type": "input_audio", "input_audio": {"data": …,
        "format": "wav" | "mp3" | …}}), in order; the format is read from the bytes themselves."""
        out = []
        for k, part in enumerate(self.content if isinstance(self.content, list) else []):
            if part.get("type") == "input_audio":
                body = part.get("input_audio")
                out.append((f"{where}.content[{k}].input_audio.data", body.get("data") if isinstance(body, dict)
                            else None))
        return out


class Tool(_Body):
    type: Literal["function"] = "function"
    function: dict[str, Any]


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    open_thinking: bool | None = None
    modalities: list[Literal["text", "audio"]] | None = None    # ["text", "audio"]: an omni model speaks too
    audio: dict[str, Any] | None = None                          # OpenAI's {"voice", "format"}: format wav only

    def speaks(self) -> bool:
        return "audio" in (self.modalities or [])

    def thinking(self) -> bool:
        kwargs = self.chat_template_kwargs or {}
        return bool(kwargs.get("enable_thinking", kwargs.get("open_thinking", self.open_thinking or False)))

    def forced_prefix(self) -> str:
        """Text the reply is made to start with: tool_choice "required" opens a tool call, a named function
        also writes its name, so even a small model calls what the client demands."""
        if not self.tools or self.tool_choice in (None, "none", "auto"):
            return ""
        if self.tool_choice == "required":
            return "<tool_call>\n"
        name = (self.tool_choice.get("function") or {}).get("name")
        return f'<tool_call>\n{{"name": {json.dumps(name, ensure_ascii=False)}, "arguments": ' if name else ""


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False


# ---- responses ---------------------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def tool_calls(parsed: ParsedOutput) -> list[dict]:
    return [{"id": new_id("call"), "type": "function",
             "function": {"name": c["name"], "arguments": json.dumps(c["arguments"], ensure_ascii=False)}}
            for c in parsed.tool_calls]


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class TokenText:
    """Token ids → the token's text and UTF-8 bytes, for logprobs (a byte-level token may hold part of a
    character: its text then shows U+FFFD, its bytes are exact)."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.cache: dict[int, tuple[str, list[int]]] = {}

    def __call__(self, token_id: int) -> tuple[str, list[int]]:
        if token_id not in self.cache:
            raw = self.tokenizer.token_bytes(token_id)
            self.cache[token_id] = (raw.decode("utf-8", errors="replace"), list(raw))
        return self.cache[token_id]

    def chat_entry(self, token_id: int, logprob: float, top: list[tuple[int, float]]) -> dict:
        text, raw = self(token_id)
        return {"token": text, "logprob": logprob, "bytes": raw,
                "top_logprobs": [{"token": self(i)[0], "logprob": lp, "bytes": self(i)[1]} for i, lp in top]}


TAGS = ("<think>", "</think>", "<tool_call>")


class StreamSplitter:
    """Incremental reasoning/content split of a reply, agreeing with `parse_output` on the whole text.

    Text is held back while it might be the start of a tag or a trailing newline that the final parse
    strips; content after "<tool_call>" is held to the end, where the parsed tool calls are sent instead
    (or, if none parses, the text itself).
    """

    def __init__(self, prefix: str = ""):
        self.text = prefix
        self.sent_reasoning = self.sent_content = 0

    def feed(self, piece: str) -> tuple[str, str]:
        self.text += piece
        return self._delta(final=False)

    def finish(self, parsed: ParsedOutput) -> tuple[str, str]:
        reasoning, content = self._delta(final=True)
        if not parsed.tool_calls:                   # unparsed "<tool_call>" text is plain content
            content += parsed.content[self.sent_content:]
            self.sent_content = len(parsed.content)
        return reasoning, content

    def _delta(self, final: bool) -> tuple[str, str]:
        text = self.text
        if not final:
            held = max((k for tag in TAGS for k in range(1, len(tag)) if text.endswith(tag[:k])), default=0)
            text = text[:len(text) - held]
        if "</think>" in text:
            reasoning, content = text.split("</think>", 1)
            reasoning = reasoning.split("<think>")[-1]
        elif text.lstrip().startswith("<think>"):
            reasoning, content = text.lstrip()[len("<think>"):], ""
        else:
            reasoning, content = "", text
        reasoning = reasoning.lstrip("\n")
        content = content.lstrip("\n").split("<tool_call>")[0]
        if not final or "</think>" in text:
            reasoning = reasoning.rstrip("\n")
        content = content.rstrip("\n")
        new_reasoning = reasoning[self.sent_reasoning:]
        new_content = content[self.sent_content:]
        self.sent_reasoning = max(self.sent_reasoning, len(reasoning))
        self.sent_content = max(self.sent_content, len(content))
        return new_reasoning, new_content
