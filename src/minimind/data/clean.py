"""`minimind data clean`: pretraining and SFT jsonl → kept records, rejected records with the rule that removed
each, and a report. A record is judged on all of its text (a conversation as a whole).

    1. Unicode normalisation: every text field NFC in the output (canonical: full-width Chinese punctuation stays);
       the rules and the duplicate keys read the NFKC form (compatibility: full-width letters, ligatures folded)
    2. quality rules and language identification (data/quality.py), thresholds in `CleanConfig`
    3. exact duplicates: the same text as an earlier record, whitespace aside
    4. near duplicates: a MinHash signature sharing an LSH band with an earlier kept record's, and agreeing with
       it on ≥ near_threshold of its positions (data/minhash.py)
    5. PII scrubbing in what is kept: e-mail addresses, phone numbers, ID and card numbers → placeholders

Nothing is lost silently: OUT/kept.jsonl + OUT/rejects.jsonl hold every non-blank input line once (each reject with
its rule, the line it came from and, for a duplicate, the line it repeats), and OUT/report.md / report.json count
records, characters and bytes per rule, languages, and the duplicate clusters' sizes.

Steps 1–2 and the signatures run in `workers` processes on chunks of lines; the deduplication runs in the main
process in input order, so the output does not depend on the number of workers. Memory is bounded by the chunks in
flight plus the index (a signature and a band entry per kept record). The run writes into OUT's sibling
`.OUT.partial/` and saves its state there every `checkpoint_bytes` of input: run the same command again after an
interruption and it resumes from the last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import time
import unicodedata
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from minimind.data import quality
from minimind.data.minhash import LSHIndex, MinHasher
from minimind.errors import MiniMindError
from minimind.fileio import atomic_write_text, check_replaceable, replace_directory
from minimind.jsonl import JSONProblem, parse_line

CHUNK_BYTES = 1 << 20          # input handed to a worker at a time
EXAMPLES = 3                   # example texts kept per rule in the report


@dataclass
class CleanConfig:
    min_words: int = 5                   # fewer words (a CJK character counts as one) carry too little to train on
    max_chars: int = 100_000
    max_symbol_ratio: float = 0.3        # symbols (Unicode S*, and # * @ & % _ \ | ~ ^): not letters or punctuation
    max_digit_ratio: float = 0.5
    max_repeated_lines: float = 0.3      # share of the characters in lines that repeat an earlier line
    max_ngram_share: float = 0.2         # characters covered by the most frequent word 3-gram (or CJK 6-gram)
    languages: list[str] = field(default_factory=lambda: ["en", "zh"])   # langid codes to keep; [] keeps all
    min_language_score: float = 0.5      # langid's probability of the kept languages, summed
    min_stop_word_share: float = 0.02    # stop words per word, in a text of ≥ 50 words (modern prose: 0.1–0.2)
    shingle: int = 5                     # characters per MinHash shingle in alphabetic text
    shingle_cjk: int = 2                 # … in text that is mostly CJK (2: bigrams, see docs/data.md)
    permutations: int = 128
    bands: int = 16                      # LSH bands of permutations / bands rows
    near_threshold: float = 0.8          # estimated Jaccard similarity at which a record is a near duplicate
    seed: int = 0
    scrub_pii: bool = True
    workers: int = 0                     # processes judging records; 0: one per core

    def validate(self) -> None:
        if self.permutations <= 0 or self.bands <= 0 or self.permutations % self.bands:
            raise MiniMindError("clean config: 'permutations' must be a positive multiple of 'bands'")
        if not 0 < self.near_threshold <= 1:
            raise MiniMindError("clean config: 'near_threshold' must be in (0, 1]")
        if min(self.shingle, self.shingle_cjk) < 1 or self.workers < 0:
            raise MiniMindError("clean config: 'shingle', 'shingle_cjk' ≥ 1 and 'workers' ≥ 0 are required")
        if self.languages:
            known = quality.known_languages()
            unknown = [code for code in self.languages if code not in known]
            if unknown:
                raise MiniMindError(f"clean config: 'languages' has {unknown}, which langid does not know; it knows "
                                    f"{', '.join(sorted(known))}")


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


@dataclass
class Judged:
    """What a worker found of one line; `record` is its JSON as read (normalised), `kept` as it would be kept."""
    rule: str | None
    record: str
    text: str = ""
    language: str | None = None
    kept: str = ""
    kept_chars: int = 0
    pii: Counter | None = None
    exact_key: int = 0
    signature: np.ndarray | None = None


class Judge:
    """Steps 1, 2 and the signature of one line, in a worker process."""

    def __init__(self, config: CleanConfig):
        self.config, self.hasher = config, MinHasher(config.permutations, config.shingle, config.shingle_cjk,
                                                           config.seed)

    def lines(self, lines: list[bytes]) -> list[Judged]:
        return [self.line(line) for line in lines]

    def line(self, line: bytes) -> Judged:
        try:
            record = parse_line(line)
        except JSONProblem as e:
            return Judged("unreadable", json.dumps({"line": line.decode("utf-8", "replace").rstrip("\n"),
                                                    "problem": str(e)}, ensure_ascii=False))
        try:
            record = _map_text(record, lambda t: unicodedata.normalize("NFC", t))
            text = record_text(record)
        except MiniMindError:
            return Judged("unreadable", json.dumps(record, ensure_ascii=False))
        folded = unicodedata.normalize("NFKC", text)
        as_read = json.dumps(record, ensure_ascii=False)
        rule, language = quality.quality_problem(folded, self.config)
        if rule:
            return Judged(rule, as_read, text, language)
        pii = Counter()
        if self.config.scrub_pii:
            record = _map_text(record, lambda t: _scrub_count(t, pii))
        key = int.from_bytes(hashlib.blake2b("".join(folded.split()).encode(), digest_size=8).digest(), "little")
        return Judged(None, as_read, text, language, json.dumps(record, ensure_ascii=False),
                      len(record_text(record)), pii, key, self.hasher.signature(folded))


def _scrub_count(text: str, total: Counter) -> str:
    text, found = quality.scrub(text)
    total.update(found)
    return text


_WORKER: Judge | None = None


def _start_worker(config: CleanConfig) -> None:
    global _WORKER
    _WORKER = Judge(config)


def _judge_in_worker(lines: list[bytes]) -> list[Judged]:
    return _WORKER.lines(lines)


@dataclass
class Chunk:
    file: int
    numbers: list[int]          # line numbers of the non-blank lines
    lines: list[bytes]
    end: tuple[int, int, int]   # where the input resumes after this chunk: (file, byte offset, line number)
    size: int                   # bytes read, blank lines included


def _chunks(paths: list[Path], start: tuple[int, int, int]) -> Iterator[Chunk]:
    """The inputs from `start` on, in chunks of about CHUNK_BYTES; a file's last chunk ends at (next file, 0, 0)."""
    first, offset, number = start
    for index in range(first, len(paths)):
        with paths[index].open("rb") as f:
            f.seek(offset)
            numbers, lines, size = [], [], 0
            for line in f:
                number += 1
                offset += len(line)
                size += len(line)
                if line.strip():
                    numbers.append(number)
                    lines.append(line)
                if size >= CHUNK_BYTES:
                    yield Chunk(index, numbers, lines, (index, offset, number), size)
                    numbers, lines, size = [], [], 0
            yield Chunk(index, numbers, lines, (index + 1, 0, 0), size)
        offset = number = 0


def _judged(chunks: Iterator[Chunk], config: CleanConfig, workers: int) -> Iterator[tuple[Chunk, list[Judged]]]:
    """Each chunk with its lines judged, in input order; at most 2 chunks per worker in flight."""
    if workers == 1:
        judge = Judge(config)
        for chunk in chunks:
            yield chunk, judge.lines(chunk.lines)
        return
    quality.load_tables(config.languages)      # once, before the fork, and shared
    with multiprocessing.get_context("fork").Pool(workers, _start_worker, (config,)) as pool:
        pending = deque()
        for chunk in chunks:
            pending.append((chunk, pool.apply_async(_judge_in_worker, (chunk.lines,))))
            if len(pending) >= 2 * workers:
                chunk, result = pending.popleft()
                yield chunk, result.get()
        while pending:
            chunk, result = pending.popleft()
            yield chunk, result.get()


EXACT = np.dtype([("key", "<u8"), ("cluster", "<i8")])
SOURCE = np.dtype([("file", "<i8"), ("line", "<i8")])
OUTPUTS = ("kept.jsonl", "rejects.jsonl")                       # in the work directory
INDEX = ("signatures.bin", "sources.bin", "exact.bin")          # in its .state/


class Cleaner:
    """The main process's side: steps 3–4 in input order, the output files, the counts, and the saved state that
    lets an interrupted run resume. Files in `work`: kept.jsonl, rejects.jsonl, and under .state/ the index
    (signatures.bin: a kept record's signature; sources.bin: its file and line; exact.bin: a text hash and the
    kept record it belongs to) and state.json."""

    def __init__(self, work: Path, paths: list[Path], config: CleanConfig):
        self.work, self.state_dir, self.paths, self.config = work, work / ".state", paths, config
        self.files = {name: work / name for name in OUTPUTS} | {name: self.state_dir / name for name in INDEX}
        self.index = LSHIndex(config.permutations, config.bands, config.near_threshold)
        self.exact: dict[int, int] = {}
        self.sources = np.empty(1024, dtype=SOURCE)
        self.counts, self.chars, self.pii, self.languages = Counter(), Counter(), Counter(), Counter()
        self.clusters: Counter = Counter()          # kept record → how many records were removed as its duplicates
        self.examples: dict[str, list[str]] = {}
        self.position, self.bytes_in, self.seconds, self.resumed = (0, 0, 0), 0, 0.0, 0

    # --- the state on disk --------------------------------------------------------------------------------------
    def identity(self) -> dict:
        inputs = [{"path": str(p.resolve()), "size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns}
                  for p in self.paths]
        return {"inputs": inputs, "config": asdict(self.config)}

    def open(self) -> str | None:
        """Start, or resume from the saved state when it was saved for the same inputs and config; returns a line
        saying which."""
        state_file = self.state_dir / "state.json"
        state = json.loads(state_file.read_text()) if state_file.is_file() else None
        if state is None or state["identity"] != self.identity():
            shutil.rmtree(self.work, ignore_errors=True)
            self.state_dir.mkdir(parents=True)
            self.handles = {name: path.open("wb") for name, path in self.files.items()}
            return None if state is None else "the inputs or the config changed since the last run: starting over"
        self.handles = {}
        for name, size in state["files"].items():         # what was written after the last checkpoint goes
            handle = self.files[name].open("r+b")
            handle.truncate(size)
            handle.seek(size)
            self.handles[name] = handle
        kept, exact = state["kept"], state["exact"]
        signatures = np.fromfile(self.files["signatures.bin"], dtype=np.uint32, count=kept * self.config.permutations)
        self.index.extend(signatures.reshape(kept, self.config.permutations))
        self.sources = np.fromfile(self.files["sources.bin"], dtype=SOURCE, count=kept)
        pairs = np.fromfile(self.files["exact.bin"], dtype=EXACT, count=exact)
        self.exact = dict(zip(pairs["key"].tolist(), pairs["cluster"].tolist(), strict=True))
        for name in ("counts", "chars", "pii", "languages"):
            getattr(self, name).update(state[name])
        self.clusters.update({int(k): v for k, v in state["clusters"].items()})
        self.examples = state["examples"]
        self.position, self.bytes_in = tuple(state["position"]), state["bytes_in"]
        self.seconds, self.resumed = state["seconds"], state["resumed"] + 1
        file, _, line = self.position
        where = f"{self.paths[file]}:{line}" if file < len(self.paths) else "the end"
        return f"resuming after {where} ({self.counts.total():,} records judged)"

    def checkpoint(self, seconds: float) -> None:
        for handle in self.handles.values():
            handle.flush()
            os.fsync(handle.fileno())
        state = {"identity": self.identity(), "position": self.position, "bytes_in": self.bytes_in,
                 "seconds": seconds, "resumed": self.resumed, "kept": self.index.size, "exact": len(self.exact),
                 "files": {name: handle.tell() for name, handle in self.handles.items()},
                 "counts": self.counts, "chars": self.chars, "pii": self.pii, "languages": self.languages,
                 "clusters": {str(k): v for k, v in self.clusters.items()}, "examples": self.examples}
        atomic_write_text(self.state_dir / "state.json", json.dumps(state, ensure_ascii=False))

    # --- steps 3 and 4 -------------------------------------------------------------------------------------------
    def take(self, chunk: Chunk, judged: list[Judged]) -> None:
        for number, item in zip(chunk.numbers, judged, strict=True):
            where = f"{self.paths[chunk.file]}:{number}"
            self.chars["in"] += len(item.text)
            rule, extra = item.rule, {}
            if rule is None:
                rule, extra = self.deduplicate(item, chunk.file, number)
            if rule is None:
                self.handles["kept.jsonl"].write((item.kept + "\n").encode())
                self.chars["out"] += item.kept_chars
                self.pii.update(item.pii)
                if item.language:
                    self.languages[item.language] += 1
                self.counts["kept"] += 1
                continue
            if rule == "language":
                extra["language"] = item.language
            reject = json.dumps({"rule": rule, "source": where} | extra, ensure_ascii=False)
            self.handles["rejects.jsonl"].write(f'{reject[:-1]}, "record": {item.record}}}\n'.encode())
            self.counts[rule] += 1
            examples = self.examples.setdefault(rule, [])
            if len(examples) < EXAMPLES:
                examples.append(item.text[:200] or item.record[:200])
        self.position = chunk.end
        self.bytes_in += chunk.size

    def deduplicate(self, item: Judged, file: int, line: int) -> tuple[str | None, dict]:
        """(None, {}) for a new text, now indexed; otherwise the rule and the record it repeats."""
        cluster = self.exact.get(item.exact_key)
        rule, similarity = "exact_duplicate", 1.0
        if cluster is None:
            match = self.index.match(item.signature)
            if match is None:
                cluster = self.index.add(item.signature)
                self.handles["signatures.bin"].write(item.signature.tobytes())
                self.handles["sources.bin"].write(np.array((file, line), dtype=SOURCE).tobytes())
                if cluster == len(self.sources):
                    self.sources = np.resize(self.sources, max(1024, 2 * len(self.sources)))
                self.sources[cluster] = (file, line)
                rule = None
            else:
                (cluster, similarity), rule = match, "near_duplicate"
            self.exact[item.exact_key] = cluster
            self.handles["exact.bin"].write(np.array((item.exact_key, cluster), dtype=EXACT).tobytes())
        if rule is None:
            return None, {}
        self.clusters[cluster] += 1
        return rule, {"duplicate_of": self.source(cluster), "similarity": round(similarity, 3)}

    def source(self, cluster: int) -> str:
        file, line = self.sources[cluster]
        return f"{self.paths[file]}:{line}"

    # --- the report ----------------------------------------------------------------------------------------------
    def report(self, seconds: float, workers: int) -> dict:
        sizes = Counter(n + 1 for n in self.clusters.values())
        bins = {"2": (2, 2), "3-5": (3, 5), "6-10": (6, 10), "11-100": (11, 100), ">100": (101, float("inf"))}
        largest = self.clusters.most_common(5)
        return {
            "records": self.counts.total(), "kept": self.counts["kept"],
            "removed": {k: v for k, v in self.counts.items() if k != "kept"},
            "characters_in": self.chars["in"], "characters_out": self.chars["out"],
            "bytes_in": self.bytes_in, "bytes_out": self.handles["kept.jsonl"].tell(),
            "seconds": round(seconds, 2), "mb_per_s": round(self.bytes_in / 1e6 / max(seconds, 1e-9), 2),
            "workers": workers, "resumed": self.resumed,
            "languages": dict(self.languages), "pii_replaced": dict(self.pii),
            "duplicate_clusters": {"count": len(self.clusters),
                                   "sizes": {name: sum(n for size, n in sizes.items() if lo <= size <= hi)
                                             for name, (lo, hi) in bins.items()},
                                   "largest": [{"size": n + 1, "first": self.source(c)} for c, n in largest]},
            "examples": self.examples, "config": asdict(self.config)}


def clean(inputs: list[str | Path], out: str | Path, config: CleanConfig | None = None,
          checkpoint_bytes: int = 64 << 20, log=print) -> dict:
    """Clean the jsonl `inputs` into OUT/kept.jsonl, OUT/rejects.jsonl, OUT/report.json and OUT/report.md."""
    config = config or CleanConfig()
    config.validate()
    paths = [Path(p) for p in inputs]
    for path in paths:
        if not path.is_file():
            raise MiniMindError(f"{path}: file not found")
    out = check_replaceable(out, "report.json")
    work = out.parent / f".{out.name}.partial"
    workers = config.workers or len(os.sched_getaffinity(0))
    cleaner = Cleaner(work, paths, config)
    said = cleaner.open()
    if said:
        log(said)
    begin, since = time.perf_counter() - cleaner.seconds, cleaner.bytes_in
    for chunk, judged in _judged(_chunks(paths, cleaner.position), config, workers):
        cleaner.take(chunk, judged)
        if cleaner.bytes_in - since >= checkpoint_bytes:
            cleaner.checkpoint(time.perf_counter() - begin)
            since = cleaner.bytes_in
    report = cleaner.report(time.perf_counter() - begin, workers)
    for handle in cleaner.handles.values():
        handle.close()
    shutil.rmtree(cleaner.state_dir)
    (work / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (work / "report.md").write_text(_markdown(report))
    replace_directory(work, out)
    return report


def _markdown(report: dict) -> str:
    mib = report["bytes_in"] / 2**20
    lines = ["# Data cleaning report", "",
             f"{report['records']:,} records in, {report['kept']:,} kept; {report['characters_in']:,} characters in, "
             f"{report['characters_out']:,} out; {mib:,.1f} MiB read in {report['seconds']:,.1f} s "
             f"({report['mb_per_s']:.2f} MB/s, {report['workers']} workers"
             + (f", resumed {report['resumed']}×" if report["resumed"] else "") + ").", "",
             "| rule | records removed | example |", "|---|---|---|"]
    for rule, n in sorted(report["removed"].items(), key=lambda kv: -kv[1]):
        example = (report["examples"].get(rule) or [""])[0].replace("\n", " ").replace("|", "\\|")[:80]
        lines.append(f"| {rule} | {n:,} | {example} |")
    clusters = report["duplicate_clusters"]
    if clusters["count"]:
        lines += ["", f"Duplicate clusters (a kept record and the records removed as its duplicates): "
                  f"{clusters['count']:,}; by size: "
                  + ", ".join(f"{name}: {n:,}" for name, n in clusters["sizes"].items() if n) + "; largest: "
                  + ", ".join(f"{c['size']} (first at {c['first']})" for c in clusters["largest"]) + "."]
    if report["languages"]:
        lines += ["", "Kept records by language: " + ", ".join(f"{k} {v:,}" for k, v in
                                                               sorted(report["languages"].items(),
                                                                      key=lambda kv: -kv[1]))]
    if any(report["pii_replaced"].values()):
        lines += ["", "PII replaced in kept records: " + ", ".join(f"{k} {v:,}" for k, v in
                                                                    report["pii_replaced"].items() if v)]
    return "\n".join(lines) + "\n"
