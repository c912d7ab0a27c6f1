"""Train the byte-level BPE: GPT-2's pre-tokenizer split, 256 byte symbols, merges learnt up to the vocabulary
size, with the special tokens at ids 0…35. Text comes from jsonl files (every string a record holds: "text",
message contents and reasoning) or plain text files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from minimind.errors import MiniMindError
from minimind.jsonl import JSONProblem, parse_line
from minimind.tokenizer.tokenizer import NUM_SPECIAL, SPECIAL_TOKENS, Tokenizer


def train_tokenizer(texts: Iterator[str], vocab_size: int = 6400) -> Tokenizer:
    if vocab_size <= len(SPECIAL_TOKENS) + 256:
        raise MiniMindError(f"vocab_size must exceed {len(SPECIAL_TOKENS) + 256} (special tokens + 256 bytes)")
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(texts, trainer)
    # The trainer registers every listed token as special; the tool/think/buffer tokens must not be, so
    # that decoding with skip_special_tokens keeps them for the output parser.
    spec = json.loads(backend.to_str())
    for token in spec["added_tokens"]:
        token["special"] = token["id"] < NUM_SPECIAL
    return Tokenizer(tokenizers.Tokenizer.from_str(json.dumps(spec)))


def iter_texts(paths: list[str | Path]) -> Iterator[str]:
    """Every text of the files: jsonl records' strings (recursively), or plain text files line by line."""
    for path in map(Path, paths):
        if not path.is_file():
            raise MiniMindError(f"{path}: file not found")
        with path.open("rb") as f:
            for number, data in enumerate(f, 1):
                if path.suffix != ".jsonl":
                    yield data.decode("utf-8", errors="replace")
                elif data.strip():
                    try:
                        yield from _strings(parse_line(data))
                    except JSONProblem as e:
                        raise MiniMindError(f"{path}:{number}: {e}") from None


def _strings(value) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in ("role", "name", "type"):
                yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def chars_per_token(tokenizer: Tokenizer, texts) -> dict[str, float]:
    """Characters per token, separately for Chinese texts (any Han character) and the others (English)."""
    chars, tokens = {"English": 0, "Chinese": 0}, {"English": 0, "Chinese": 0}
    for text in texts:
        language = "Chinese" if any("\u4e00" <= c <= "\u9fff" for c in text) else "English"
        chars[language] += len(text)
        tokens[language] += len(tokenizer.encode(text))
    return {language: chars[language] / tokens[language] for language in chars if tokens[language]}
