"""An offline multiple-choice benchmark built deterministically from the default data's sources, since no
standard benchmark items ship in any package here. Five tasks, English and Chinese, four options each:

    en_next_line     which line continues this one          held-out works (Julius Caesar, A Lover's Complaint)
    en_speaker       who says this line, in which play      the training plays
    zh_next_clause   which clause continues this quotation  the held-out idioms' source quotations
    zh_author        who wrote this line                    the training idioms' source quotations
    zh_idiom_meaning which meaning fits this idiom          the training idioms

The continuation tasks are held out from pretraining and measure language modelling; the other three ask for
knowledge the pretraining text states (a closed-book test of what the model absorbed). Records are in our
multiple-choice layout: {"task", "context", "choices", "answer"}; each option continues the context verbatim.
"""

from __future__ import annotations

import random
import re
from collections import Counter

ITEMS_PER_TASK = 200
SPEAKER = re.compile(r"^([A-Z][A-Za-z' ]{1,24})\.$")
ROMAN = re.compile(r"^[IVXLC]+$")
QUOTE = re.compile(r"^(?:([\u4e00-\u9fff]{1,3})·)?([\u4e00-\u9fff]{2,4})《[^》]+》[^“]*：“([^”]+)”")
CLAUSE = re.compile(r"[^，；。！？：]+[，；。！？]")


def benchmark(works: list[tuple[str, str]], eval_works: tuple[str, ...], train_idioms: list[dict],
              eval_idioms: list[dict], seed: str) -> list[dict]:
    held_out = [text for title, text in works if title in eval_works]
    plays = [(title, text) for title, text in works if title not in eval_works]
    tasks = {"en_next_line": _next_lines(held_out), "en_speaker": _speakers(plays),
             "zh_next_clause": _next_clauses(eval_idioms), "zh_author": _authors(train_idioms),
             "zh_idiom_meaning": _meanings(train_idioms)}
    records = []
    for task, make in tasks.items():
        rng = random.Random(f"{seed}/{task}")
        candidates = [c for c in make(rng) if c[2]]                # None: too few distinct distractors
        for context, answer, distractors in rng.sample(candidates, min(ITEMS_PER_TASK, len(candidates))):
            choices = [answer, *distractors]
            rng.shuffle(choices)
            records.append({"task": task, "context": context, "choices": choices, "answer": choices.index(answer)})
    return records


def _distractors(rng: random.Random, pool: list[str], answer: str, k: int = 3) -> list[str] | None:
    picked = []
    for option in rng.sample(pool, min(len(pool), 4 * k)):
        if option != answer and option not in picked:
            picked.append(option)
        if len(picked) == k:
            return picked
    return None


def _verse(line: str) -> bool:
    return 20 <= len(line) <= 70 and not SPEAKER.match(line) and not line.startswith(("[", "ACT", "SCENE"))


def _next_lines(texts: list[str]):
    def make(rng):
        out = []
        for text in texts:
            lines = [line.strip() for line in text.splitlines()]
            pool = [line for line in lines if _verse(line)]
            for i in range(2, len(lines) - 1):
                if all(_verse(line) for line in lines[i - 2:i + 2]):
                    wrong = _distractors(rng, pool, lines[i + 1])
                    if wrong:
                        out.append(("\n".join(lines[i - 2:i + 1]) + "\n", lines[i + 1], wrong))
        return out
    return make


def _speeches(text: str) -> list[tuple[str, str]]:
    """(speaker, first line of the speech) for each 'NAME.' header followed by a verse line."""
    lines = [line.strip() for line in text.splitlines()]
    return [(m[1], lines[i + 1]) for i, line in enumerate(lines[:-1])
            if (m := SPEAKER.match(line)) and not ROMAN.match(m[1]) and _verse(lines[i + 1])]


def _speakers(plays: list[tuple[str, str]]):
    def make(rng):
        out = []
        for title, text in plays:
            speeches = _speeches(text)
            regulars = [name for name, count in Counter(s for s, _ in speeches).most_common(8) if count >= 10]
            if len(regulars) < 4:
                continue
            for speaker, line in speeches:
                if speaker in regulars:
                    wrong = _distractors(rng, [f" {r}" for r in regulars], f" {speaker}")
                    out.append((f"In {title}, who says “{line}”?\nAnswer:", f" {speaker}", wrong))
        return out
    return make


def _quotes(idioms: list[dict]) -> list[tuple[str, str, str]]:
    """(dynasty, author, quotation) of each idiom whose derivation starts with `dynasty·author《work》：“…”`."""
    return [(m[1] or "", m[2], m[3]) for idiom in idioms if (m := QUOTE.match(idiom["derivation"]))]


def _next_clauses(idioms: list[dict]):
    def make(rng):
        pairs = []
        for _, _, quote in _quotes(idioms):
            clauses = CLAUSE.findall(quote)
            if len(clauses) >= 2 and 4 <= len(clauses[0]) <= 20 and 4 <= len(clauses[1]) <= 20:
                pairs.append((clauses[0], clauses[1]))
        pool = [second for _, second in pairs]
        return [(f"“{first}", second, _distractors(rng, pool, second)) for first, second in pairs]
    return make


def _authors(idioms: list[dict]):
    def make(rng):
        quotes = [(author, quote) for _, author, quote in _quotes(idioms)
                  if 8 <= len(quote) <= 40 and author != "无名氏" and not author.startswith("释")]
        counts = Counter(author for author, _ in quotes)
        known = [author for author, count in counts.most_common() if count >= 30]
        return [(f"“{quote}”这句话的作者是", author, _distractors(rng, [a for a in known if a != author], author))
                for author, quote in quotes if author in known]
    return make


def _meanings(idioms: list[dict]):
    def make(rng):
        usable = [i for i in idioms if 6 <= len(i["explanation"]) <= 40 and i["word"] not in i["explanation"]]
        pool = [i["explanation"] for i in usable]
        return [(f"成语“{i['word']}”读作{i['pinyin']}，意思是：", i["explanation"],
                 _distractors(rng, pool, i["explanation"])) for i in usable]
    return make
