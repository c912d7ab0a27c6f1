"""`minimind data clean`: pretraining and SFT jsonl → kept records, rejected records with the rule that removed
each, and a report. A record is judged on all of its text (a conversation as a whole).

    1. Unicode NFKC normalisation of every text field (kept in the output)
    2. quality rules, thresholds in `CleanConfig`: length, symbol and digit ratios, repeated lines, a repeated
       word n-gram's share of the text
    3. exact duplicates: the same normalised text (whitespace collapsed) as an earlier record
    4. near duplicates: MinHash over character shingles, LSH in bands; a record whose estimated Jaccard
       similarity to an earlier kept record reaches `near_threshold` is removed
    5. PII scrubbing in what is kept: e-mail addresses, phone numbers, ID and card numbers → placeholders

Nothing is lost silently: OUT/kept.jsonl + OUT/rejects.jsonl hold every input line once (each reject with its rule
and the line it came from), and OUT/report.md / report.json count records and characters per rule.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
import zlib
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from minimind.errors import MiniMindError
from minimind.fileio import atomic_directory
from minimind.jsonl import JSONProblem, parse_line

PII = [("email", re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "<email>"),
       ("id_number", re.compile(r"(?<!\d)\d{17}[\dXx](?!\d)"), "<id>"),                  # PRC resident ID
       ("card_number", re.compile(r"(?<!\d)(?:\d[ -]?){15,18}\d(?!\d)"), "<card>"),
       ("phone", re.compile(r"(?<![\d+])(?:\+?\d{1,3}[ -]?)?(?:1[3-9]\d{9}|\(?\d{3}\)?[ -]?\d{3}[ -]?\d{4})(?!\d)"),
        "<phone>")]
SYMBOLS = set("#*@&%_\\|~^")
PRIME = (1 << 31) - 1             # the MinHash family (a·x + b) mod p over 32-bit shingle hashes: fits in uint64


@dataclass
class CleanConfig:
    min_words: int = 5                   # fewer words (a CJK character counts as one) carry too little to train on
    max_chars: int = 100_000
    max_symbol_ratio: float = 0.3        # symbols (Unicode S*, and # * @ & % _ \ | ~ ^): not letters or punctuation
    max_digit_ratio: float = 0.5
    max_repeated_lines: float = 0.3      # share of the characters in lines that repeat an earlier line
    max_ngram_share: float = 0.2         # characters covered by the most frequent word 3-gram (or CJK 6-gram)
    shingle: int = 5                     # characters per shingle for MinHash
    permutations: int = 128
    bands: int = 16                      # LSH bands of permutations / bands rows
    near_threshold: float = 0.8          # estimated Jaccard similarity at which a record is a near duplicate
    seed: int = 0
    scrub_pii: bool = True

    def validate(self) -> None:
        if self.permutations % self.bands:
            raise MiniMindError("clean config: 'permutations' must be a multiple of 'bands'")
        if not 0 < self.near_threshold <= 1:
            raise MiniMindError("clean config: 'near_threshold' must be in (0, 1]")


def record_text(record: dict) -> str:
    """All of a record's text: a pretraining record's "text", or every message of a conversation."""
    if isinstance(record.get("text"), str):
        return record["text"]
    conversation = record.get("conversations")
    if isinstance(conversation, list):
        return "\n".join(m[key] for m in conversation if isinstance(m, dict)
                         for key in ("reasoning_content", "content") if isinstance(m.get(key), str))
    raise MiniMindError("expected a pretraining record {\"text\"} or a conversation {\"conversations\"}")


def _map_text(record: dict, fn) -> dict:
    if isinstance(record.get("text"), str):
        return record | {"text": fn(record["text"])}
    return record | {"conversations": [m | {key: fn(m[key]) for key in ("reasoning_content", "content")
                                            if isinstance(m.get(key), str)} if isinstance(m, dict) else m
                                       for m in record["conversations"]]}


def quality_problem(text: str, config: CleanConfig) -> str | None:
    """The first quality rule `text` breaks, or None."""
    n = len(text)
    if len(re.findall(r"[\u3400-\u4dbf\u4e00-\u9fff]|[^\W\d_\u3400-\u4dbf\u4e00-\u9fff]+", text)) < config.min_words:
        return "too_short"
    if n > config.max_chars:
        return "too_long"
    symbols = sum(1 for c in text if c in SYMBOLS or unicodedata.category(c).startswith("S"))
    if symbols / n > config.max_symbol_ratio:
        return "symbol_ratio"
    if sum(c.isdigit() for c in text) / n > config.max_digit_ratio:
        return "digit_ratio"
    seen, repeated = set(), 0
    for line in (line.strip() for line in text.splitlines()):
        if line in seen:
            repeated += len(line)               # by characters: a play's repeated speaker names weigh little
        seen.add(line)
    if repeated / n > config.max_repeated_lines:
        return "repeated_lines"
    grams = _ngrams(text)
    if grams:
        gram, count = Counter(grams).most_common(1)[0]
        if count > 2 and count * len(gram) / n > config.max_ngram_share:
            return "repeated_ngram"
    return None


def _ngrams(text: str) -> list[str]:
    """Word 3-grams of the text's words, and CJK 6-grams of its CJK runs (Chinese has no spaces)."""
    words = re.findall(r"[^\W\d_]+", text.lower())
    grams = [" ".join(words[i:i + 3]) for i in range(len(words) - 2)] if len(words) >= 3 else []
    for run in re.findall(r"[\u4e00-\u9fff]{6,}", text):
        grams += [run[i:i + 6] for i in range(len(run) - 5)]
    return grams


class NearDuplicates:
    """MinHash signatures of character shingles with LSH banding: `seen(text)` says whether an earlier added text
    has an estimated Jaccard similarity ≥ threshold to it, and adds it if not. Deterministic for a seed."""

    def __init__(self, config: CleanConfig):
        rng = np.random.default_rng(config.seed)
        self.a = rng.integers(1, PRIME, config.permutations, dtype=np.uint64)
        self.b = rng.integers(0, PRIME, config.permutations, dtype=np.uint64)
        self.config, self.rows = config, config.permutations // config.bands
        self.buckets: list[dict[bytes, list[int]]] = [{} for _ in range(config.bands)]
        self.signatures: list[np.ndarray] = []

    def signature(self, text: str) -> np.ndarray:
        k = self.config.shingle
        shingles = {text[i:i + k] for i in range(max(1, len(text) - k + 1))}
        x = np.fromiter((zlib.crc32(s.encode()) for s in shingles), dtype=np.uint64, count=len(shingles))
        values = (x[:, None] * self.a + self.b) % PRIME                     # a·x < 2^31 · 2^32: no overflow
        return values.min(axis=0).astype(np.uint32)                         # < 2^31: half the index memory

    def seen(self, text: str) -> float | None:
        """The similarity of the closest earlier text at or above the threshold, or None (and then it is added)."""
        signature = self.signature(text)
        keys = [signature[i * self.rows:(i + 1) * self.rows].tobytes() for i in range(self.config.bands)]
        candidates = {j for band, key in zip(self.buckets, keys, strict=True) for j in band.get(key, ())}
        best = max((float((self.signatures[j] == signature).mean()) for j in candidates), default=0.0)
        if best >= self.config.near_threshold:
            return best
        for band, key in zip(self.buckets, keys, strict=True):
            band.setdefault(key, []).append(len(self.signatures))
        self.signatures.append(signature)
        return None


def scrub(text: str) -> tuple[str, Counter]:
    """PII replaced by placeholders, and how many of each kind."""
    found = Counter()
    for kind, pattern, placeholder in PII:
        text, n = pattern.subn(placeholder, text)
        found[kind] += n
    return text, found


def clean(inputs: list[str | Path], out: str | Path, config: CleanConfig | None = None) -> dict:
    """Clean the jsonl `inputs` into OUT/kept.jsonl, OUT/rejects.jsonl, OUT/report.json and OUT/report.md."""
    config = config or CleanConfig()
    config.validate()
    near, exact = NearDuplicates(config), set()
    counts, chars = Counter(), Counter()
    pii, examples = Counter(), {}
    with atomic_directory(out, marker="report.json") as tmp:
        with open(tmp / "kept.jsonl", "w", encoding="utf-8") as kept, \
                open(tmp / "rejects.jsonl", "w", encoding="utf-8") as rejects:
            for path in map(Path, inputs):
                if not path.is_file():
                    raise MiniMindError(f"{path}: file not found")
                with path.open("rb") as f:
                    for number, line in enumerate(f, 1):
                        if not line.strip():
                            continue
                        where = f"{path}:{number}"
                        rule, record, text = _judge(line, where, config, exact, near)
                        chars["in"] += len(text)
                        if rule is None:
                            if config.scrub_pii:
                                record = _map_text(record, lambda t: _scrub_count(t, pii))
                            kept.write(json.dumps(record, ensure_ascii=False) + "\n")
                            chars["out"] += len(record_text(record))
                            counts["kept"] += 1
                        else:
                            rejects.write(json.dumps({"rule": rule, "source": where, "record": record},
                                                     ensure_ascii=False) + "\n")
                            counts[rule] += 1
                            examples.setdefault(rule, text[:200])
        report = {"records": sum(counts.values()), "kept": counts["kept"],
                  "removed": {k: v for k, v in counts.items() if k != "kept"}, "characters_in": chars["in"],
                  "characters_out": chars["out"], "pii_replaced": dict(pii), "examples": examples,
                  "config": asdict(config)}
        (tmp / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        (tmp / "report.md").write_text(_markdown(report))
    return report


def _scrub_count(text: str, total: Counter) -> str:
    text, found = scrub(text)
    total.update(found)
    return text


def _judge(line: bytes, where: str, config: CleanConfig, exact: set, near: NearDuplicates):
    """(rule or None, the record as read (normalised), its text)."""
    try:
        record = parse_line(line)
    except JSONProblem as e:
        return "unreadable", {"line": line.decode("utf-8", "replace").rstrip("\n"), "problem": str(e)}, ""
    try:
        record = _map_text(record, lambda t: unicodedata.normalize("NFKC", t))
        text = record_text(record)
    except MiniMindError:
        return "unreadable", record, ""
    rule = quality_problem(text, config)
    if rule:
        return rule, record, text
    key = hashlib.sha1(" ".join(text.split()).encode()).digest()
    if key in exact:
        return "exact_duplicate", record, text
    exact.add(key)
    if near.seen(text) is not None:
        return "near_duplicate", record, text
    return None, record, text


def _markdown(report: dict) -> str:
    lines = ["# Data cleaning report", "", f"{report['records']:,} records in, {report['kept']:,} kept; "
             f"{report['characters_in']:,} characters in, {report['characters_out']:,} out.", "",
             "| rule | records removed | example |", "|---|---|---|"]
    for rule, n in sorted(report["removed"].items(), key=lambda kv: -kv[1]):
        example = report["examples"].get(rule, "").replace("\n", " ").replace("|", "\\|")[:80]
        lines.append(f"| {rule} | {n:,} | {example} |")
    if report["pii_replaced"]:
        lines += ["", "PII replaced in kept records: " + ", ".join(f"{k} {v:,}" for k, v in
                                                                    report["pii_replaced"].items() if v)]
    return "\n".join(lines) + "\n"
