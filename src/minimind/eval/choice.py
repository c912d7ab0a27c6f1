"""Multiple-choice evaluation: the published file layouts, prompts, and scoring by log-likelihood.

Layouts, recognised per record (csv or jsonl, local files):
    C-Eval   csv  id,question,A,B,C,D,answer[,explanation]        (answer a letter; subject from `x_val.csv`)
    CMMLU    csv  ,Question,A,B,C,D,Answer
    MMLU     csv  question,A,B,C,D,answer — no header line         (subject from `x_test.csv`)
    ARC, OpenBookQA  jsonl  {"question": {"stem", "choices": [{"text", "label"}]}, "answerKey"}
             (the Hugging Face exports too: "question" or "question_stem" with "choices": {"text", "label"})
    MMLU (HF) jsonl {"question", "choices": [...], "answer": index, "subject"}; C-Eval/CMMLU jsonl with A–D keys
    ours     jsonl {"context", "choices", "answer": index, "task"?} — choices continue the context verbatim

Scoring (lm-evaluation-harness conventions):
    cloze   each option as the continuation of "Question: q\\nAnswer:" (Chinese: "q\\n答案："): the option with the
            highest Σ log p wins (acc), or the highest Σ log p per UTF-8 byte of the option (acc_norm)
    letter  the options listed as "A. …" under the question; the letter with the highest log p wins
k-shot prompts prepend k solved items (from `--shots-from`, else other items of the same file), chosen by a
seeded draw per item. Accuracy carries a bootstrap 95% interval; chance is the mean of 1 / number of options.
"""

from __future__ import annotations

import csv
import json
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minimind.errors import MiniMindError
from minimind.eval.scoring import Scorer
from minimind.eval.stats import estimate

LETTERS = "ABCDEFGHIJ"
CJK = re.compile(r"[\u4e00-\u9fff]")
SPLIT_SUFFIX = re.compile(r"_(val|dev|test|train|validation)$")


@dataclass
class Item:
    question: str
    choices: list[str]
    answer: int                      # index into choices
    subject: str = ""
    context: str | None = None       # ours: the exact text the choices continue (no template)

    @property
    def chinese(self) -> bool:
        return bool(CJK.search(self.context or self.question))


def read_items(path: str | Path) -> list[Item]:
    path = Path(path)
    if not path.is_file():
        raise MiniMindError(f"{path}: no such file")
    subject = SPLIT_SUFFIX.sub("", path.stem)
    items = _read_csv(path, subject) if path.suffix == ".csv" else _read_jsonl(path, subject)
    if not items:
        raise MiniMindError(f"{path}: no items")
    return items


def _read_csv(path: Path, subject: str) -> list[Item]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    header = [cell.strip().lower() for cell in rows[0]] if rows else []
    has_header = "question" in header and "a" in header and "b" in header           # C-Eval, CMMLU; MMLU has none
    if has_header and "answer" not in header:
        raise MiniMindError(f"{path}: the header ({','.join(rows[0])}) has no answer column: a test split without "
                            "answers (C-Eval publishes answers in its val and dev splits, e.g. "
                            f"{subject}_val.csv; CMMLU's test and dev splits carry them)")
    if has_header:
        q, a = header.index("question"), header.index("answer")
        options = [header.index(x.lower()) for x in LETTERS if x.lower() in header]
    body, first = (rows[1:], 2) if has_header else (rows, 1)
    items = []
    for number, row in enumerate(body, first):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path}:{number}"
        if has_header:
            if len(row) <= max(q, a, *options):
                raise MiniMindError(f"{where}: expected {len(header)} columns, found {len(row)}")
            question, choices, answer = row[q], [row[i] for i in options], row[a]
        else:
            if len(row) < 4:
                raise MiniMindError(f"{where}: expected question, options and an answer letter (MMLU layout), "
                                    f"found {len(row)} columns")
            question, choices, answer = row[0], row[1:-1], row[-1]
        items.append(Item(question, choices, _answer_index(answer, LETTERS[:len(choices)], where), subject))
    return items


def _read_jsonl(path: Path, subject: str) -> list[Item]:
    items = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise MiniMindError(f"{where}: not JSON ({e})") from None
            if not isinstance(record, dict):
                raise MiniMindError(f"{where}: expected a JSON object")
            items.append(_item(record, subject, where))
    return items


def _item(r: dict, subject: str, where: str) -> Item:
    subject = str(r.get("subject") or r.get("task") or subject)
    question, choices = r.get("question"), r.get("choices")
    if isinstance(question, dict):                                  # ARC / OpenBookQA originals
        labels = [str(c.get("label")) for c in question.get("choices", [])]
        texts = [c.get("text") for c in question.get("choices", [])]
        return _checked(question.get("stem"), texts, _answer_index(r.get("answerKey"), labels, where), subject, where)
    if isinstance(choices, dict):                                   # ARC / OpenBookQA as exported by HF datasets
        labels = [str(x) for x in choices.get("label", [])]
        text = question if question is not None else r.get("question_stem")
        return _checked(text, choices.get("text"), _answer_index(r.get("answerKey"), labels, where), subject, where)
    if isinstance(choices, list):                                   # ours, MMLU (HF)
        answer = _answer_index(r.get("answer"), LETTERS[:len(choices)], where)
        if "context" in r:
            item = _checked("", choices, answer, subject, where)
            if not isinstance(r["context"], str):
                raise MiniMindError(f"{where}: field 'context' must be a string")
            item.context = r["context"]
            return item
        return _checked(question, choices, answer, subject, where)
    letters = [x for x in LETTERS if x in r]
    if letters and (question is not None or "Question" in r):      # C-Eval / CMMLU rows as JSON
        text = question if question is not None else r["Question"]
        answer = r.get("answer", r.get("Answer"))
        return _checked(text, [r[x] for x in letters], _answer_index(answer, letters, where), subject, where)
    raise MiniMindError(f"{where}: unrecognised multiple-choice record (keys: {', '.join(r) or 'none'}); "
                        "see `minimind eval --help` for the layouts read")


def _checked(question, choices, answer: int, subject: str, where: str) -> Item:
    if not isinstance(question, str):
        raise MiniMindError(f"{where}: the question must be a string")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
        raise MiniMindError(f"{where}: expected at least two options, each a string")
    return Item(question, choices, answer, subject)


def _answer_index(answer, labels, where: str) -> int:
    """An answer given as an index (int), a label ("B", "3") or a letter; checked against the options."""
    if isinstance(answer, bool) or answer is None:
        raise MiniMindError(f"{where}: missing answer")
    if isinstance(answer, int):
        index = answer
    else:
        key = str(answer).strip()
        if key in labels:
            index = labels.index(key)
        elif key.upper() in LETTERS[:len(labels)]:
            index = LETTERS.index(key.upper())
        else:
            raise MiniMindError(f"{where}: answer {answer!r} is not one of the options' labels ({', '.join(labels)})")
    if not 0 <= index < len(labels):
        raise MiniMindError(f"{where}: answer index {index} out of range for {len(labels)} options")
    return index


def prompt(item: Item, method: str) -> tuple[str, list[str]]:
    """(context, one continuation per option)."""
    zh = item.chinese
    if method == "cloze":
        if item.context is not None:
            return item.context, list(item.choices)
        return ((f"{item.question}\n答案：", list(item.choices)) if zh
                else (f"Question: {item.question}\nAnswer:", [f" {c}" for c in item.choices]))
    letters = LETTERS[:len(item.choices)]
    body = (item.context.rstrip() if item.context is not None else item.question) + "".join(
        f"\n{x}. {c.strip()}" for x, c in zip(letters, item.choices, strict=False))
    return (f"{body}\n答案：", list(letters)) if zh else (f"{body}\nAnswer:", [f" {x}" for x in letters])


def evaluate_choice(scorer: Scorer, items: list[Item], method: str = "cloze", shots: int = 0,
                    shot_items: list[Item] | None = None, seed: int = 0) -> dict:
    if method not in ("cloze", "letter"):
        raise MiniMindError(f"unknown scoring method {method!r}; use cloze or letter")
    pool = shot_items if shot_items is not None else items
    if shots > len(pool) - (shot_items is None):
        raise MiniMindError(f"{shots}-shot needs more than {shots} items to draw examples from")
    requests, spans = [], []
    for index, item in enumerate(items):
        prefix = ""
        if shots:
            rng = random.Random(f"{seed}/{index}")
            candidates = [i for i in range(len(pool)) if shot_items is not None or i != index]
            for i in rng.sample(candidates, shots):
                context, continuations = prompt(pool[i], method)
                prefix += context + continuations[pool[i].answer] + "\n\n"
        context, continuations = prompt(item, method)
        spans.append((len(requests), len(continuations)))
        requests += [(prefix + context, c) for c in continuations]
    logps = [lp for lp, _ in scorer.loglikelihood(requests)]
    correct, correct_norm, subjects = [], [], defaultdict(list)     # subject -> [(correct, chance)]
    for item, (start, n) in zip(items, spans, strict=True):
        scores = np.array(logps[start:start + n])
        lengths = np.array([max(1, len(c.encode("utf-8"))) for _, c in requests[start:start + n]])
        correct.append(float(scores.argmax() == item.answer))
        correct_norm.append(float((scores / lengths).argmax() == item.answer))
        subjects[item.subject].append((correct[-1], 1 / n))
    out = {"method": method, "shots": shots, "n": len(items), "acc": estimate(correct).to_dict(),
           "chance": float(np.mean([1 / len(item.choices) for item in items]))}
    if method == "cloze":
        out["acc_norm"] = estimate(correct_norm).to_dict()
    if len(subjects) > 1:
        out["subjects"] = {subject: {"acc": estimate([c for c, _ in v]).to_dict(),
                                     "chance": float(np.mean([p for _, p in v]))}
                           for subject, v in sorted(subjects.items())}
    return out
