"""`minimind chat`: one reply for scripts, or a REPL with history, streaming, and reasoning shown apart.

REPL commands: /reset (forget the history), /system TEXT, /think on|off, /exit.
"""

from __future__ import annotations

import sys
import time

from minimind.errors import MiniMindError
from minimind.infer import Engine, SamplingParams
from minimind.tokenizer import parse_output

DIM, RESET = "\033[2m", "\033[0m"


def one_shot(engine: Engine, prompt: str, params: SamplingParams, system: str | None = None,
             thinking: bool = False) -> str:
    """The reply's content only (tool calls, if any, as their <tool_call> text)."""
    if not prompt.strip():
        raise MiniMindError("empty prompt")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    completion, parsed = engine.chat(messages, params, enable_thinking=thinking)[0]
    return parsed.content if not parsed.tool_calls else completion.text


def repl(engine: Engine, params: SamplingParams, system: str | None = None, thinking: bool = False) -> None:
    history = []
    styled = sys.stdout.isatty()
    print("MiniMind chat — /reset, /system TEXT, /think on|off, /exit", file=sys.stderr)
    while True:
        try:
            line = input("\nyou> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return
        command, _, argument = line.strip().partition(" ")
        if command == "/exit":
            return
        if command == "/reset":
            history = []
            print("(history cleared)", file=sys.stderr)
            continue
        if command == "/system":
            system = argument or None
            print(f"(system: {system!r})", file=sys.stderr)
            continue
        if command == "/think":
            thinking = argument == "on"
            print(f"(thinking {'on' if thinking else 'off'})", file=sys.stderr)
            continue
        if not line.strip():
            continue
        history.append({"role": "user", "content": line})
        messages = ([{"role": "system", "content": system}] if system else []) + history
        prompt = engine.chat_prompt(messages, enable_thinking=thinking)
        print("minimind> ", end="", flush=True)
        start, text, tokens = time.perf_counter(), "", 0
        try:
            for (delta,) in engine.stream([prompt], params):
                tokens += 1
                text += delta.text
                print(_display(delta.text, styled), end="", flush=True)
        except KeyboardInterrupt:
            print(" [interrupted]", end="")
        except MiniMindError as e:                  # e.g. the conversation outgrew the context
            history.pop()
            print(f"\n(error: {e}; /reset to start over)", file=sys.stderr)
            continue
        seconds = time.perf_counter() - start
        parsed = parse_output(text)
        reply = {"role": "assistant", "content": parsed.content}
        if parsed.reasoning_content:
            reply["reasoning_content"] = parsed.reasoning_content
        if parsed.tool_calls:
            reply["tool_calls"] = parsed.tool_calls
        history.append(reply)
        print(f"\n({tokens} tokens, {tokens / max(seconds, 1e-9):.1f} tokens/s)", file=sys.stderr)


def _display(text: str, styled: bool) -> str:
    """Reasoning is set apart: dimmed on a terminal, bracketed otherwise."""
    opening, closing = (f"{DIM}[thinking] ", f"{RESET}\n") if styled else ("[thinking] ", "\n[answer] ")
    return text.replace("<think>", opening).replace("</think>", closing)
