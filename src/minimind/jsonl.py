"""Reading one jsonl line safely: whatever the bytes, the result is a JSON object or a JSONProblem."""

from __future__ import annotations

import json


class JSONProblem(Exception):
    """Why a line (or an embedded JSON string) is unusable, in words for an error message."""


def loads(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise JSONProblem(f"not valid JSON ({e.msg} at column {e.colno})") from None
    except (ValueError, RecursionError) as e:       # an over-long integer, absurd nesting
        raise JSONProblem(f"not usable JSON ({type(e).__name__})") from None


def parse_line(data: bytes) -> dict:
    """One jsonl line → a JSON object whose strings all encode as UTF-8."""
    try:
        line = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise JSONProblem(f"not UTF-8 (byte {e.start})") from None
    value = loads(line)
    if not isinstance(value, dict):
        raise JSONProblem("expected a JSON object")
    if "\\u" in line:      # an escape may spell half of a surrogate pair, which no tokenizer can encode
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise JSONProblem("contains an unpaired surrogate escape") from None
    return value
