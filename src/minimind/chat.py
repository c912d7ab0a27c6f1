"""`minimind chat`: one reply for scripts, or a REPL with history, streaming, and reasoning shown apart.

REPL commands: /reset (forget the history), /system TEXT, /think on|off, /image PATH (attach to the next message),
/exit. A vision model reads images given with --image (repeatable): each takes the place of an `<image>` marker in
the message, or, when the message has none, they come first, one per line (as MiniMind-V's demo puts them). An
omni model hears clips given with --audio (wav, flac, mp3) the same way (`<audio>` markers), and with --speak
OUT.wav says its reply too (`minimind.infer.omni.speak`).
"""

from __future__ import annotations

import sys
import time

from minimind.data.audio import read_audio, write_wav
from minimind.data.formats import AUDIO_MARKER, IMAGE_MARKER
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


def load_audios(model, paths: list[str]) -> list:
    """The clips at `paths` as the model's encoder reads them (log-mel [n_mels, F]); refused for a model that does
    not hear."""
    if not paths:
        return []
    audio = getattr(model, "audio", None)
    if audio is None:
        raise MiniMindError("--audio: this model hears no audio (it is not an omni model)")
    from minimind.model.audio import log_mel

    return [log_mel(read_audio(path, where=str(path)), audio.n_mels) for path in paths]


def with_image_markers(text: str, count: int, marker: str = IMAGE_MARKER) -> str:
    """`text` with a marker line per image (or clip) in front, unless it places them itself."""
    return text if marker in text else (marker + "\n") * count + text


def stream_reply(engine: Engine, prompt: list[int], params: SamplingParams, images: list | None = None,
                 show=None, show_steps: bool = False, audios: list | None = None) -> Completion:
    """One prompt's completion, each new piece of text passed to `show` as it comes. show_steps: a diffusion
    model's denoising trajectory is printed instead, a line per step (the text so far, then the block: ░ for [MASK],
    ↵ for a line break, ✓ where a block completes), and `show` gets the whole text at the end."""
    batch = engine.start([prompt], params, images=[images or []], audios=[audios or []])
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
             thinking: bool = False, images: list | None = None, show_steps: bool = False,
             audios: list | None = None, speak_to: str | None = None) -> str:
    """The reply's content only (tool calls, if any, as their <tool_call> text); with `speak_to`, an omni model's
    spoken reply is written there as a wav file."""
    if not prompt.strip() and not audios:
        raise MiniMindError("empty prompt")
    content = with_image_markers(with_image_markers(prompt, len(images or [])), len(audios or []), AUDIO_MARKER)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]
    chat_prompt = engine.chat_prompt(messages, enable_thinking=thinking, audios=audios)
    if speak_to is not None:
        from minimind.infer.omni import speak

        if getattr(engine.model, "talker", None) is None:
            raise MiniMindError("--speak: this model does not speak (it is not an omni model with a Talker)")
        spoken = speak(engine.model, engine.tokenizer, chat_prompt, audios, params, seed=params.seed or 0)
        write_wav(speak_to, spoken.wave)
        print(f"(spoke {spoken.seconds:.1f} s into {speak_to})", file=sys.stderr)
        return engine.tokenizer.decode(spoken.text_ids, skip_special_tokens=True).strip()
    completion = stream_reply(engine, chat_prompt, params, images, show_steps=show_steps, audios=audios)
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
