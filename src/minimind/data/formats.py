"""The jsonl record formats of each stage (the reference's, so its published files work unchanged), validated.

    pretrain  {"text": str}
    sft       {"conversations": [message, …], "tools"?: [schema, …]}          at least one assistant message
    dpo       {"chosen": [message, …], "rejected": [message, …]}             each ending with an assistant message
    rl        {"conversations": [message, …], "answer"?: str | number}      the prompt; a trailing assistant
                                                                            message (the reference's placeholder)
                                                                            is dropped
    vision    {"conversations": [message, …], "image": "a.jpg, b.jpg"}     sft with images (MiniMind-V's layouts):
              or {…, "images": [path, …]}; parquet rows                 each `<image>` in a user message takes the
              {"conversations": json, "image_bytes": bytes | [bytes]}   next image; no marker at all = a text-only
                                                                            row whose image is a placeholder (ignored)
    speech    {"conversations": [message, …], "audios": [path, …],     sft with sound (MiniMind-O's): each `<audio>`
               "answer_audio"?: path, "transcripts"?: [str, …]};        in a user message takes the next clip; the
              parquet rows may hold bytes in "question_audios" /        last assistant turn spoken (answer_audio);
              "answer_audio"                                            what each clip says (the encoder's CTC)
    message   {"role": "system"|"user"|"assistant"|"tool", "content": str,
               "reasoning_content"?: str, "tool_calls"?: [{"name", "arguments"} | {"function": {…}}]}

As in the reference, `tools` may instead sit on the system message and `tools` / `tool_calls` may be JSON
strings. A bad record raises `RecordError("file:line: field: problem")`; `read_records(..., skip_bad=True)`
counts and skips such lines instead. A `.parquet` file is read row by row as the same records ("file:row N").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from minimind.errors import MiniMindError
from minimind.jsonl import JSONProblem, loads, parse_line
from minimind.tokenizer.tokenizer import IMAGE_PAD

STAGES = ("pretrain", "sft", "dpo", "rl", "vision", "labels", "speech")
IMAGE_MARKER = "<image>"          # MiniMind-V's placeholder for one image in a message
AUDIO_MARKER = "<audio>"          # one clip in a user message (its run of <|audio_pad|> tokens)
AUDIO_PAD = "<|audio_pad|>"
ROLES = ("system", "user", "assistant", "tool")


class RecordError(MiniMindError):
    """A record that does not fit its stage's format; the message is "file:line: field: problem"."""


class _Bad(Exception):
    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")


@dataclass
class ReadReport:
    records: int = 0
    skipped: int = 0
    first_errors: list[str] = field(default_factory=list)     # up to 5 messages of skipped lines


def read_records(path: str | Path, stage: str, skip_bad: bool = False,
                 report: ReadReport | None = None) -> Iterator[dict]:
    """Yield the validated, normalised records of a jsonl file:
    pretrain {"text"}; sft {"messages", "tools"}; dpo {"chosen", "rejected", "tools"}; rl {"messages", "tools",
    "answer"}."""
    if stage not in STAGES:
        raise MiniMindError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
    path = Path(path)
    if not path.is_file():
        raise MiniMindError(f"{path}: file not found")
    report = report if report is not None else ReadReport()
    for where, raw in (_parquet_rows(path) if path.suffix == ".parquet" else _jsonl_rows(path)):
        try:
            if isinstance(raw, JSONProblem):
                raise _Bad("(line)", str(raw))
            record = VALIDATORS[stage](raw)
        except _Bad as e:
            message = f"{where}: {e}"
            if not skip_bad:
                raise RecordError(message) from None
            report.skipped += 1
            if len(report.first_errors) < 5:
                report.first_errors.append(message)
            continue
        report.records += 1
        if stage in ("vision", "labels", "speech"):
            record |= {"where": where, "base": str(path.parent)}
        yield record


def _jsonl_rows(path: Path):
    """("file:line", the line's object or the JSONProblem that keeps it from being one) per non-blank line."""
    with path.open("rb") as f:
        for number, data in enumerate(f, 1):
            if data.strip():
                try:
                    yield f"{path}:{number}", parse_line(data)
                except JSONProblem as e:
                    yield f"{path}:{number}", e


def _parquet_rows(path: Path):
    """("file:row N", the row as a dict) for each row of a parquet file, a batch at a time (bounded memory)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MiniMindError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
    try:
        table = pq.ParquetFile(path)
        number = 0
        for batch in table.iter_batches(batch_size=256):
            for row in batch.to_pylist():
                number += 1
                yield f"{path}:row {number}", row
    except (OSError, ValueError) as e:            # pyarrow's errors derive from these
        raise MiniMindError(f"{path}: not a readable parquet file ({e})") from None


def _loads(text: str, where: str):
    try:
        return loads(text)
    except JSONProblem as e:
        raise _Bad(where, str(e)) from None


def _pretrain(raw: dict) -> dict:
    text = raw.get("text")
    if not isinstance(text, str):
        raise _Bad("text", "missing" if text is None else f"must be a string, got {type(text).__name__}")
    if not text.strip():
        raise _Bad("text", "is empty")
    return {"text": text}


def _sft(raw: dict) -> dict:
    messages, tools = _conversation(raw, "conversations")
    if not any(m["role"] == "assistant" for m in messages):
        raise _Bad("conversations", "has no assistant message to train on")
    return {"messages": messages, "tools": tools}


def _dpo(raw: dict) -> dict:
    out = {}
    for key in ("chosen", "rejected"):
        messages, tools = _conversation(raw, key)
        if messages[-1]["role"] != "assistant":
            raise _Bad(f"{key}[{len(messages) - 1}].role", "the last message must be the assistant's answer")
        out[key], out["tools"] = messages, out.get("tools") or tools
    return out


def _rl(raw: dict) -> dict:
    messages, tools = _conversation(raw, "conversations")
    if messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    if not messages or messages[-1]["role"] not in ("user", "tool"):
        raise _Bad("conversations", "must end with a user (or tool) message: it is the prompt")
    answer = raw.get("answer")
    if answer is not None and not _scalar(answer):
        raise _Bad("answer", f"must be a string or number, got {answer!r}")
    gt = raw.get("gt")                       # the reference's agentic records: every expected item of the answer
    if gt is not None:
        gt = gt if isinstance(gt, list) else [gt]
        if not gt or not all(_scalar(item) for item in gt):
            raise _Bad("gt", f"must be a non-empty list of strings or numbers, got {raw.get('gt')!r}")
    record = {"messages": messages, "tools": tools, "answer": None if answer is None else str(answer)}
    return record | ({"gt": [str(item) for item in gt]} if gt is not None else {})


def _vision(raw: dict) -> dict:
    """sft's checks, and the images: paths (the "image" string, comma-separated, or an "images" list) or bytes
    ("image_bytes", one or a list), one per `<image>` marker of the user messages, in order."""
    if isinstance(raw.get("conversations"), str):                  # parquet holds the conversation as JSON text
        raw = raw | {"conversations": _loads(raw["conversations"], "conversations")}
    record = _sft(raw)
    images = _image_list(raw)
    markers = _count_markers(record["messages"], IMAGE_MARKER, IMAGE_PAD, "an image")
    if markers == 0:
        images = []                          # a text-only row (MiniMind-V gives it a placeholder picture)
    elif markers != len(images):
        raise _Bad("conversations", f"has {markers} {IMAGE_MARKER} marker(s) for {len(images)} image(s)")
    kind = raw.get("type")                   # a question's type (`minimind eval --task vqa` groups by it)
    return record | {"images": images} | ({"type": kind} if isinstance(kind, str) and kind else {})


def _count_markers(messages: list[dict], marker: str, pad: str, what: str) -> int:
    """The `marker`s of the user messages; a message holding the placeholder token itself, or a marker outside a
    user message, is refused."""
    count = 0
    for i, message in enumerate(messages):
        if pad in message["content"]:
            raise _Bad(f"conversations[{i}].content", f"holds {pad} itself; mark {what} with {marker}")
        if marker in message["content"] and message["role"] != "user":
            raise _Bad(f"conversations[{i}].content", f"{marker} may only appear in user messages")
        count += message["content"].count(marker)
    return count


def _speech(raw: dict) -> dict:
    """sft's checks, and the sound: "audios" (paths relative to the file, or bytes: MiniMind-O's
    "question_audios"), one per `<audio>` marker of the user messages in order; "answer_audio" (a path or bytes),
    the last assistant message spoken, for the Talker."""
    if isinstance(raw.get("conversations"), str):
        raw = raw | {"conversations": _loads(raw["conversations"], "conversations")}
    record = _sft(raw)
    key = "audios" if "audios" in raw else "question_audios"
    audios = raw.get(key) or []
    if not isinstance(audios, list) or not all(isinstance(a, (str, bytes)) and a for a in audios):
        raise _Bad(key, "must be a list of audio file paths (or bytes)")
    markers = _count_markers(record["messages"], AUDIO_MARKER, AUDIO_PAD, "a clip")
    if markers != len(audios):
        raise _Bad("conversations", f"has {markers} {AUDIO_MARKER} marker(s) for {len(audios)} clip(s)")
    transcripts = raw.get("transcripts")
    if transcripts is not None and (not isinstance(transcripts, list) or len(transcripts) != len(audios)
                                    or not all(isinstance(t, str) for t in transcripts)):
        raise _Bad("transcripts", f"must be a list of {len(audios)} string(s), what each clip says")
    answer = raw.get("answer_audio")
    if answer is not None and not (isinstance(answer, (str, bytes)) and answer):
        raise _Bad("answer_audio", "must be an audio file's path (or bytes)")
    if answer is not None and record["messages"][-1]["role"] != "assistant":
        raise _Bad("answer_audio", "speaks the last assistant message; the conversation does not end with one")
    kind = raw.get("type")
    return record | {"audios": list(audios), "answer_audio": answer, "transcripts": transcripts} | (
        {"type": kind} if isinstance(kind, str) and kind else {})


def expand_image_markers(messages: list[dict], image_tokens: int) -> list[dict]:
    """Each `<image>` of the user messages → `image_tokens` <|image_pad|> tokens (the run its image fills)."""
    pads = IMAGE_PAD * image_tokens
    return [m | {"content": m["content"].replace(IMAGE_MARKER, pads)}
            if m.get("role") == "user" and isinstance(m.get("content"), str) else m for m in messages]


def expand_audio_markers(messages: list[dict], frames: list[int]) -> list[dict]:
    """Each `<audio>` of the user messages, in order → the <|audio_pad|> run of its clip
    (⌈frames/8⌉ tokens: `minimind.model.audio.audio_tokens`)."""
    runs = iter(frames)
    out = []
    for m in messages:
        content = m.get("content")
        if m.get("role") == "user" and isinstance(content, str) and AUDIO_MARKER in content:
            pieces = content.split(AUDIO_MARKER)
            content = pieces[0] + "".join(AUDIO_PAD * -(-next(runs) // 8) + p for p in pieces[1:])
            m = m | {"content": content}
        out.append(m)
    return out


def _image_list(raw: dict) -> list:
    if raw.get("image_bytes") is not None:
        value = raw["image_bytes"]
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(b, (bytes, bytearray)) and b for b in items):
            raise _Bad("image_bytes", "must be image bytes or a list of them")
        return [bytes(b) for b in items]
    value = raw.get("images", raw.get("image"))
    if value is None:
        return []
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",")]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _Bad("image", "must be a file name, comma-separated names, or a list of names")
    return value


def _scalar(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (str, int, float)) and value == value


def _conversation(raw: dict, key: str) -> tuple[list[dict], list[dict] | None]:
    conversation = raw.get(key)
    if not isinstance(conversation, list) or not conversation:
        raise _Bad(key, "missing" if conversation is None else "must be a non-empty list of messages")
    tools = _tools(raw.get("tools"), "tools")
    messages = []
    for i, message in enumerate(conversation):
        where = f"{key}[{i}]"
        if not isinstance(message, dict):
            raise _Bad(where, "must be an object")
        role = message.get("role")
        if role not in ROLES:
            raise _Bad(f"{where}.role", f"must be one of {', '.join(ROLES)}; got {role!r}")
        content = message.get("content")
        tool_calls = _tool_calls(message.get("tool_calls"), f"{where}.tool_calls") if role == "assistant" else None
        if content is None and tool_calls:
            content = ""
        if not isinstance(content, str):
            raise _Bad(f"{where}.content", "missing" if content is None else
                       f"must be a string, got {type(content).__name__}")
        clean = {"role": role, "content": content}
        reasoning = message.get("reasoning_content")
        if reasoning is not None:
            if not isinstance(reasoning, str):
                raise _Bad(f"{where}.reasoning_content", "must be a string")
            if role == "assistant" and reasoning:
                clean["reasoning_content"] = reasoning
        if tool_calls:
            clean["tool_calls"] = tool_calls
        if role == "system" and message.get("tools") is not None and tools is None:
            tools = _tools(message["tools"], f"{where}.tools")
        messages.append(clean)
    return messages, tools or None


def _json_list(value, where: str) -> list | None:
    if isinstance(value, str):
        if not value.strip():
            return None
        value = _loads(value, where)
    if value is not None and not isinstance(value, list):
        raise _Bad(where, "must be a list")
    return value


def _tools(value, where: str) -> list[dict] | None:
    tools = _json_list(value, where)
    for j, tool in enumerate(tools or []):
        if not isinstance(tool, dict):
            raise _Bad(f"{where}[{j}]", "must be an object (a function schema)")
    return tools


def _tool_calls(value, where: str) -> list[dict] | None:
    calls = _json_list(value, where)
    if not calls:
        return None
    out = []
    for j, call in enumerate(calls):
        if isinstance(call, dict) and isinstance(call.get("function"), dict):
            call = call["function"]
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise _Bad(f"{where}[{j}]", "must have a string 'name'")
        arguments = call.get("arguments", {})
        if isinstance(arguments, str):
            arguments = _loads(arguments, f"{where}[{j}].arguments")
        if not isinstance(arguments, dict):
            raise _Bad(f"{where}[{j}].arguments", "must be an object")
        out.append({"name": call["name"], "arguments": arguments})
    return out


def _labels(raw: dict) -> dict:
    """A labelled image (the vision-tower stage): "image" (a path relative to the file) and "labels", an object of
    label name → class (a string or an integer)."""
    image, labels = raw.get("image"), raw.get("labels")
    if not isinstance(image, str) or not image:
        raise _Bad("image", "must be an image file's path")
    if not isinstance(labels, dict) or not labels:
        raise _Bad("labels", "must be a non-empty object of label → class")
    for name, value in labels.items():
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise _Bad(f"labels.{name}", f"must be a string or an integer, got {value!r}")
    return {"image": image, "labels": labels}


VALIDATORS = {"pretrain": _pretrain, "sft": _sft, "dpo": _dpo, "rl": _rl, "vision": _vision, "labels": _labels,
              "speech": _speech}
