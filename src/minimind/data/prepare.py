"""Tokenize a jsonl file once into a prepared directory that training memory-maps.

    DIR/meta.json     stage, dtype, counts, and the fingerprint of (inputs, tokenizer, stage) for cache hits
    DIR/tokens.bin    every document's token ids, concatenated (uint16 while the vocabulary fits, else uint32)
    DIR/mask.bin      uint8 per token: 1 = a training target (pretrain: all; sft/dpo: assistant tokens; rl: none)
    DIR/offsets.bin   int64 [documents + 1]: document d is tokens[offsets[d]:offsets[d+1]]
    DIR/records.jsonl rl only: the normalised prompt records (messages, tools, answer), one per document
    DIR/images.bin    vision only: uint8 [images, S, S, 3], every image resized to the tower's square
    DIR/image_offsets.bin  vision only: int64 [documents + 1]: document d's images are images[io[d]:io[d+1]]

Documents: pretrain [<|im_start|>] + text + [<|im_end|>]; sft the rendered conversation; dpo two per pair,
chosen (2i) then rejected (2i+1); rl the generation prompt (thinking off); vision sft's, with each `<image>` marker
replaced by the tower's image_tokens `<|image_pad|>` tokens. Rendering is Python; encoding runs in
the Rust tokenizer's thread pool, a batch at a time. The directory is written atomically; re-running with the
same inputs, tokenizer and stage is a cache hit.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from minimind.config import VisionConfig
from minimind.data.formats import ReadReport, expand_image_markers, read_records
from minimind.data.images import record_arrays
from minimind.errors import MiniMindError
from minimind.fileio import atomic_directory
from minimind.model.vlm import check_image_tokens
from minimind.tokenizer import Tokenizer
from minimind.tokenizer.template import JINJA

FORMAT_VERSION = 1
BATCH = 1024
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")


def prepare(data: list[str | Path], stage: str, tokenizer_dir: str | Path, out: str | Path,
            skip_bad_lines: bool = False, progress: bool = True, vision: VisionConfig | None = None) -> dict:
    """Tokenize `data` files of `stage` into `out`; returns the statistics (also in meta.json). The vision stage
    needs the tower's config (`vision`): its image size and tokens per image."""
    tokenizer = Tokenizer.load(tokenizer_dir)
    for path in map(Path, data):
        if not path.is_file():
            raise MiniMindError(f"{path}: file not found")
    if (stage == "vision") != (vision is not None):
        raise ValueError("the vision stage, and only it, needs a VisionConfig")
    out = Path(out)
    shape = [vision.image_size, vision.image_tokens] if vision else None
    fingerprint = _fingerprint(data, stage, Path(tokenizer_dir) / "tokenizer.json", skip_bad_lines, shape)
    meta = _read_meta(out / "meta.json")
    if meta.get("fingerprint") == fingerprint:
        return meta | {"cache_hit": True}

    start = time.perf_counter()
    dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32
    report, offsets = ReadReport(), [0]
    with atomic_directory(out, marker="meta.json") as tmp:
        records = read_records_all(data, stage, skip_bad_lines, report)
        if vision is not None:
            images = ImageWriter(tmp, vision, skip_bad_lines, report)
            records = images.keep_readable(records)
        with open(tmp / "tokens.bin", "wb") as tokens_f, open(tmp / "mask.bin", "wb") as mask_f, \
                open(tmp / "records.jsonl", "w", encoding="utf-8") as records_f, \
                tqdm(desc=f"prepare {stage}", unit=" records", disable=not progress) as bar:
            for batch in _batches(records, BATCH):
                for ids, mask in _tokenize(batch, stage, tokenizer, vision):
                    np.asarray(ids, dtype=dtype).tofile(tokens_f)
                    np.asarray(mask, dtype=np.uint8).tofile(mask_f)
                    offsets.append(offsets[-1] + len(ids))
                if stage == "rl":
                    records_f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in batch)
                bar.update(len(batch))
        if stage != "rl":
            (tmp / "records.jsonl").unlink()
        np.asarray(offsets, dtype=np.int64).tofile(tmp / "offsets.bin")
        seconds = time.perf_counter() - start
        meta = {"format_version": FORMAT_VERSION, "stage": stage, "dtype": np.dtype(dtype).name,
                "num_tokens": offsets[-1], "num_docs": len(offsets) - 1, "records": report.records,
                "skipped_lines": report.skipped, "skipped_examples": report.first_errors,
                "vocab_size": tokenizer.vocab_size, "sources": [str(p) for p in data],
                "fingerprint": fingerprint, "seconds": round(seconds, 3),
                "tokens_per_second": round(offsets[-1] / max(seconds, 1e-9))}
        if vision is not None:
            meta |= images.close()
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return meta | {"cache_hit": False}


class ImageWriter:
    """Reads each vision record's images (paths relative to its file's folder, or bytes), resizes them to the
    tower's square and appends them to images.bin; a record with an unreadable image is an error naming its
    "file:line" and image, or (skip_bad) skipped and counted."""

    def __init__(self, folder: Path, vision: VisionConfig, skip_bad: bool, report: ReadReport):
        self.file = open(folder / "images.bin", "wb")
        self.folder, self.size, self.skip_bad, self.report = folder, vision.image_size, skip_bad, report
        self.image_offsets = [0]

    def keep_readable(self, records):
        for record in records:
            try:
                arrays = record_arrays(record, self.size)
            except MiniMindError as e:
                if not self.skip_bad:
                    raise
                self.report.records, self.report.skipped = self.report.records - 1, self.report.skipped + 1
                if len(self.report.first_errors) < 5:
                    self.report.first_errors.append(str(e))
                continue
            for array in arrays:
                array.tofile(self.file)
            self.image_offsets.append(self.image_offsets[-1] + len(arrays))
            yield record

    def close(self) -> dict:
        self.file.close()
        np.asarray(self.image_offsets, dtype=np.int64).tofile(self.folder / "image_offsets.bin")
        return {"num_images": self.image_offsets[-1], "image_size": self.size}


def read_records_all(paths, stage: str, skip_bad: bool, report: ReadReport):
    for path in paths:
        yield from read_records(path, stage, skip_bad, report)


def _batches(items, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _tokenize(batch: list[dict], stage: str, tokenizer: Tokenizer,
              vision: VisionConfig | None = None) -> list[tuple[list[int], list[int]]]:
    """One batch of records → (ids, mask) per document."""
    if stage == "pretrain":
        encoded = tokenizer.encode_batch([r["text"] for r in batch])
        return [([tokenizer.bos_id, *ids, tokenizer.eos_id], [1] * (len(ids) + 2)) for ids in encoded]
    if stage == "sft":
        return tokenizer.render_chat_batch([(r["messages"], r["tools"]) for r in batch])
    if stage == "vision":
        conversations = [(expand_image_markers(r["messages"], vision.image_tokens), r["tools"]) for r in batch]
        out = tokenizer.render_chat_batch(conversations)
        for record, (ids, _) in zip(batch, out, strict=True):
            check_image_tokens(ids, len(record["images"]), vision, where=record["where"])
        return out
    if stage == "dpo":
        pairs = [(r[key], r["tools"]) for r in batch for key in ("chosen", "rejected")]
        return tokenizer.render_chat_batch(pairs)
    prompts = tokenizer.render_chat_batch([(r["messages"], r["tools"]) for r in batch], add_generation_prompt=True)
    return [(ids, [0] * len(ids)) for ids, _ in prompts]


def _read_meta(path: Path) -> dict:
    """An existing meta.json, or {} when there is none or it is unreadable (then the directory is rebuilt)."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _fingerprint(paths, stage: str, tokenizer_file: Path, skip_bad: bool, image_shape: list | None = None) -> str:
    """Hash of everything the output depends on: format version, stage, options, inputs, tokenizer, template (and
    for vision the image size and tokens per image; image files count by name, size and modification time)."""
    h = hashlib.sha256(json.dumps([FORMAT_VERSION, stage, skip_bad, JINJA, image_shape]).encode())
    for path in [*map(Path, paths), tokenizer_file]:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    if image_shape is not None:
        for folder in sorted({Path(path).parent for path in paths}):       # each folder once
            for image in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
                stat = image.stat()
                h.update(f"{image}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return h.hexdigest()
