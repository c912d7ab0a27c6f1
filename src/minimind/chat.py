"""`minimind chat`: one reply for scripts, or a REPL with history, streaming, and reasoning shown apart.

REPL commands: /reset (forget the history), /system TEXT, /think on|off, /image PATH (attach to the next message),
/exit. A vision model reads images given with --image (repeatable): each takes the place of an `<image>` marker in
the message, or, when the message has none, they come first, one per line (as MiniMind-V's demo puts them).
"""

from __future__ import annotations

import sys
import time

from minimind.data.formats import IMAGE_MARKER
from minimind.data.images import load_array
from minimind.errors import MiniMindError
from minimind.infer import Completion, Engine, SamplingParams
from minimind.tokenizer import parse_output

DIM, RESET = "\033[2m", "\033[0m"


def load_images(model, paths: list[str]) -> list:
    """The images at `paths` as the model's tower reads them (uint8 [S, S, 3]); refused for a text-only model."""
    if not paths:
        return []
    vision = getattr(model, "vision", None)
    if vision is None:
        raise MiniMindError("--image: this model reads no images (it is not a vision-language model)")
    return [load_array(path, vision.image_size, where=str(path)) for path in paths]


def with_image_markers(text: str, count: int) -> str:
    """`text` with an `<image>` line per image in front, unless it places its images itself."""
    return text if IMAGE_MARKER in text else (IMAGE_MARKER + "\n") * count + text


def stream_reply(engine: Engine, prompt: list[int], params: SamplingParams, images: list | None = None,
                 show=None, show_steps: bool = False) -> Completion:
    """One prompt's completion, each new piece of text passed to `show` as it comes. show_steps: a diffusion
    model's denoising trajectory is printed instead, a line per step (the text so far, then the block: ░ for [MASK],
    ↵ for a line break, ✓ where a block completes), and `show` gets the whole text at the end."""
    batch = engine.start([prompt], params, images=[images or []])
    row, text, step = batch.rows[0], "", 0
    while batch:
        (delta,) = batch.step()
        step += 1
        if show_steps and delta.canvas is not None:
            done = " ✓" if delta.tokens else ""
            print(f"step {step:3d} │ {(text + delta.canvas).replace(chr(10), '↵')}{done}", flush=True)
        text += delta.text
        if show is not None and delta.text and not show_steps:
            show(delta.text)
    if show is not None and show_steps:
        show(text)
    return row.out


def one_shot(engine: Engine, prompt: str, params: SamplingParams, system: str | None = None,
             thinking: bool = False, images: list | None = None, show_steps: bool = False) -> str:
    """The reply's content only (tool calls, if any, as their <tool_call> text)."""
    if not prompt.strip():
        raise MiniMindError("empty prompt")
    user = {"role": "user", "content": with_image_markers(prompt, len(images or []))}
    messages = ([{"role": "system", "content": system}] if system else []) + [user]
    completion = stream_reply(engine, engine.chat_prompt(messages, enable_thinking=thinking), params, images,
                              show_steps=show_steps)
    parsed = parse_output(completion.text)
    return parsed.content if not parsed.tool_calls else completion.text


def repl(engine: Engine, params: SamplingParams, system: str | None = None, thinking: bool = False,
         images: list | None = None, show_steps: bool = False) -> None:
    history, shown, pending = [], [], list(images or [])     # shown: the images of the history, in order
    styled = sys.stdout.isatty()
    print("MiniMind chat — /reset, /system TEXT, /think on|off, /image PATH, /exit", file=sys.stderr)
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
            history, shown = [], []
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
        if command == "/image":
            try:
                pending += load_images(engine.model, [argument])
            except MiniMindError as e:
                print(f"(error: {e})", file=sys.stderr)
                continue
            print(f"(image attached to the next message: {argument})", file=sys.stderr)
            continue
        if not line.strip():
            continue
        history.append({"role": "user", "content": with_image_markers(line, len(pending))})
        messages = ([{"role": "system", "content": system}] if system else []) + history
        print("minimind> ", end="", flush=True)
        start, pieces = time.perf_counter(), []
        try:
            prompt = engine.chat_prompt(messages, enable_thinking=thinking)
            completion = stream_reply(engine, prompt, params, shown + pending, show_steps=show_steps,
                                      show=lambda t, pieces=pieces: (pieces.append(t),
                                                                     print(_display(t, styled), end="", flush=True)))
            text, tokens = completion.text, len(completion.token_ids)
        except KeyboardInterrupt:
            print(" [interrupted]", end="")
            text, tokens = "".join(pieces), len(pieces)
        except MiniMindError as e:                  # e.g. the conversation outgrew the context
            history.pop()
            print(f"\n(error: {e}; /reset to start over)", file=sys.stderr)
            continue
        shown, pending = shown + pending, []
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
