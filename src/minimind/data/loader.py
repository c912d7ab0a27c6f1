"""Prepared token data on disk → packed rows → training batches.

A prepared directory (written by `minimind data prepare`):

    meta.json     {"stage": "pretrain" | "sft", "dtype": "uint16" | "uint32", "num_tokens": N, "num_docs": D, …}
    tokens.bin    [N] dtype     every document's token ids, concatenated
    mask.bin      [N] uint8     1 = train on this token (pretraining: all 1; SFT: the assistant's tokens)
    offsets.bin   [D+1] int64   document d = tokens[offsets[d] : offsets[d+1]]
    images.bin, image_offsets.bin   (vision) uint8 [I, S, S, 3]; document d's images = images[io[d] : io[d+1]]

A packed row (see `minimind.data.packing`) becomes three arrays of seq_len (`build_row`):

    input_ids      the pieces' tokens end to end, then pad_id
    labels         the token where mask = 1, else -100; also -100 on every piece's first token (with attention
                   kept inside each piece it cannot be predicted) and on all padding. The model shifts: position
                   t is trained on labels[t+1], so no position ever predicts across a piece boundary or padding.
    position_ids   0, 1, 2, … restarting at every piece; the padding is one more run from 0. The model reads
                   the document boundaries (block-diagonal attention) off position_ids == 0.
    doc_ids        (with_docs=True) the document each token comes from, -1 on padding: stages that look up
                   per-document values (DPO's precomputed reference log-probs) read it.
    images         (vision data) uint8 [k, S, S, 3], the images of the row's documents in order; a batch
                   concatenates its rows' (the model splices image i into the i-th <|image_pad|> run, row by row).
                   A vision row holds whole documents only (`pack_whole`): a cut would split an image's run.
"""

from __future__ import annotations

import json
import os
from itertools import chain
from pathlib import Path

import numpy as np
import torch

from minimind.data.packing import Row
from minimind.errors import MiniMindError

IGNORE_INDEX = -100
DTYPES = ("uint16", "uint32")


class TokenData:
    """Documents as three flat arrays (memory-mapped when opened from disk).

    tokens [N] uint16/uint32, mask [N] uint8, offsets [D+1] int64; doc_lengths [D] int64.
    """

    def __init__(self, tokens: np.ndarray, mask: np.ndarray, offsets: np.ndarray, meta: dict | None = None,
                 source: str = "arrays", images: np.ndarray | None = None, image_offsets: np.ndarray | None = None):
        n = len(tokens)
        if len(mask) != n:
            raise MiniMindError(f"{source}: mask has {len(mask)} entries; expected one per token ({n})")
        if len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != n or np.any(np.diff(offsets) < 0):
            raise MiniMindError(f"{source}: offsets must rise from 0 to the number of tokens ({n})")
        if images is not None and (image_offsets is None or len(image_offsets) != len(offsets) or
                                   image_offsets[-1] != len(images) or np.any(np.diff(image_offsets) < 0)):
            raise MiniMindError(f"{source}: image_offsets must rise from 0 to the number of images ({len(images)}), "
                                "one entry per document boundary")
        self.tokens, self.mask, self.offsets = tokens, mask, offsets
        self.images, self.image_offsets = images, image_offsets
        self.meta = meta or {}
        self.doc_lengths = np.diff(offsets)

    @classmethod
    def from_arrays(cls, tokens, mask, offsets) -> TokenData:
        """In-memory data (tests, small corpora)."""
        return cls(np.asarray(tokens), np.asarray(mask, dtype=np.uint8), np.asarray(offsets, dtype=np.int64))

    @classmethod
    def open(cls, path: str | os.PathLike) -> TokenData:
        """Memory-map a prepared directory; every file is checked against meta.json and named if it disagrees."""
        path = Path(path)
        meta_path = path / "meta.json"
        try:
            meta = json.loads(meta_path.read_text())
        except FileNotFoundError:
            raise MiniMindError(f"{meta_path}: not found (is {path} a directory made by `minimind data prepare`?)"
                                ) from None
        except (OSError, ValueError) as e:
            raise MiniMindError(f"{meta_path}: unreadable ({e})") from e
        if not isinstance(meta, dict) or meta.get("dtype") not in DTYPES:
            raise MiniMindError(f"{meta_path}: 'dtype' must be one of {DTYPES}")
        for key in ("num_tokens", "num_docs"):
            if not isinstance(meta.get(key), int) or isinstance(meta[key], bool) or meta[key] < 0:
                raise MiniMindError(f"{meta_path}: '{key}' must be an integer ≥ 0")
        n, d = meta["num_tokens"], meta["num_docs"]
        tokens = _map(path / "tokens.bin", meta["dtype"], n)
        mask = _map(path / "mask.bin", "uint8", n)
        offsets = np.array(_map(path / "offsets.bin", "int64", d + 1))
        images = image_offsets = None
        if "num_images" in meta:
            size = meta.get("image_size")
            if not isinstance(size, int) or size <= 0 or not isinstance(meta["num_images"], int):
                raise MiniMindError(f"{meta_path}: 'num_images' and 'image_size' must be integers")
            images = _map(path / "images.bin", "uint8", meta["num_images"] * size * size * 3)
            images = images.reshape(meta["num_images"], size, size, 3)
            image_offsets = np.array(_map(path / "image_offsets.bin", "int64", d + 1))
        return cls(tokens, mask, offsets, meta, source=str(path / "offsets.bin"), images=images,
                   image_offsets=image_offsets)

    @property
    def num_docs(self) -> int:
        return len(self.doc_lengths)

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    def doc(self, d: int) -> tuple[np.ndarray, np.ndarray]:
        """Document d's (token ids [L], mask [L]): views, not copies."""
        a, b = self.offsets[d], self.offsets[d + 1]
        return self.tokens[a:b], self.mask[a:b]


def _map(file: Path, dtype: str, count: int) -> np.ndarray:
    """A read-only memmap of `count` items, after checking that the file holds exactly that many bytes."""
    expected = count * np.dtype(dtype).itemsize
    try:
        size = file.stat().st_size
    except FileNotFoundError:
        raise MiniMindError(f"{file}: not found") from None
    if size != expected:
        raise MiniMindError(f"{file}: {size} bytes; meta.json says {count} × {dtype} = {expected} bytes")
    if count == 0:
        return np.zeros(0, dtype=dtype)          # an empty file cannot be memory-mapped
    return np.memmap(file, dtype=dtype, mode="r", shape=(count,))


def target_report(data: TokenData, rows: list[Row]) -> dict:
    """What packing keeps of the documents' training targets (mask = 1; a document's first token is never one):

        docs            documents with at least one token
        docs_truncated  documents the rows leave some tokens of out (cut at seq_len, or in a dropped final row)
        targets         target tokens the documents hold
        targets_kept    target tokens the rows train on (a piece's first token has no context: a cut costs one)
        targets_lost    targets − targets_kept

    One pass over the mask (np.add.reduceat over the pieces' spans), so a corpus of any size is counted."""
    lengths, begins = data.doc_lengths, data.offsets[:-1]
    nonempty = lengths > 0
    targets = int(data.mask.sum(dtype=np.int64)) - int(data.mask[begins[nonempty]].sum(dtype=np.int64))
    pieces = np.fromiter(chain.from_iterable(chain.from_iterable(rows)), dtype=np.int64).reshape(-1, 3)
    covered = np.bincount(pieces[:, 0], weights=pieces[:, 2], minlength=len(lengths)) if len(pieces) else \
        np.zeros(len(lengths))
    start = begins[pieces[:, 0]] + pieces[:, 1] + 1                     # a piece's first token is no target
    end = begins[pieces[:, 0]] + pieces[:, 1] + pieces[:, 2]
    spans = end > start
    order = np.argsort(start[spans], kind="stable")
    start, end = start[spans][order], end[spans][order]
    kept = 0
    if len(start):
        bounds = np.stack([start, end], axis=1).reshape(-1)
        if bounds[-1] == len(data.mask):                               # reduceat's last sum runs to the end
            bounds = bounds[:-1]
        kept = int(np.add.reduceat(data.mask, bounds, dtype=np.int64)[0::2].sum())
    return {"docs": int(nonempty.sum()), "docs_truncated": int((covered < lengths).sum()), "targets": targets,
            "targets_kept": kept, "targets_lost": targets - kept}


def build_row(data: TokenData, pieces: Row, seq_len: int, pad_id: int,
              with_docs: bool = False) -> dict[str, np.ndarray]:
    """One packed row → {"input_ids", "labels", "position_ids"[, "doc_ids"]}, each int64 [seq_len] (see the
    module docstring)."""
    input_ids = np.full(seq_len, pad_id, dtype=np.int64)
    labels = np.full(seq_len, IGNORE_INDEX, dtype=np.int64)
    position_ids = np.empty(seq_len, dtype=np.int64)
    doc_ids = np.full(seq_len, -1, dtype=np.int64)
    t = 0
    for doc, start, length in pieces:
        if t + length > seq_len:
            raise ValueError(f"the pieces {pieces} hold more than seq_len = {seq_len} tokens")
        if start < 0 or length < 1 or start + length > data.doc_lengths[doc]:
            raise ValueError(f"piece {(doc, start, length)} is outside document {doc} "
                             f"({data.doc_lengths[doc]} tokens)")
        a = data.offsets[doc] + start
        ids = input_ids[t:t + length]
        ids[:] = data.tokens[a:a + length]
        labels[t:t + length] = np.where(data.mask[a:a + length] != 0, ids, IGNORE_INDEX)
        labels[t] = IGNORE_INDEX
        position_ids[t:t + length] = np.arange(length)
        doc_ids[t:t + length] = doc
        t += length
    position_ids[t:] = np.arange(seq_len - t)
    row = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}
    if data.images is not None:
        row["images"] = row_images(data, pieces)
    return row | {"doc_ids": doc_ids} if with_docs else row


def row_images(data: TokenData, pieces: Row) -> np.ndarray:
    """The images [k, S, S, 3] of a row's documents, in order; every piece must be a whole document."""
    parts = []
    for doc, start, length in pieces:
        a, b = data.image_offsets[doc], data.image_offsets[doc + 1]
        if b > a and (start != 0 or length != data.doc_lengths[doc]):
            raise ValueError(f"piece {(doc, start, length)} cuts document {doc}, which holds images")
        parts.append(data.images[a:b])
    return np.concatenate(parts) if parts else data.images[:0]


def collate(rows: list[dict[str, np.ndarray]], device: torch.device) -> dict[str, torch.Tensor]:
    """Built rows → a batch of LongTensors [B, seq_len] on `device` (on CUDA copied from freshly allocated
    pinned memory with non_blocking=True; the host buffers are never reused, so the copy cannot race)."""
    out = {}
    for key in rows[0]:
        join = np.concatenate if key == "images" else np.stack       # a row holds any number of images
        t = torch.from_numpy(join([r[key] for r in rows]))
        out[key] = t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t.to(device)
    return out


def row_batches(data: TokenData, rows: list[Row], batch_size: int, seq_len: int, pad_id: int = 0,
                device: str | torch.device = "cpu", with_docs: bool = False):
    """Every row once, in order, `batch_size` at a time (the last batch may be smaller): for one pass over a
    whole data set, such as precomputing a frozen model's outputs."""
    device = torch.device(device)
    for first in range(0, len(rows), batch_size):
        yield collate([build_row(data, row, seq_len, pad_id, with_docs) for row in rows[first:first + batch_size]],
                      device)


class ShuffledBatches:
    """Batches of item indices in a seeded permutation per epoch, split across ranks, resumable (state: epoch and
    step); a subclass's `collate` turns the indices into tensors (the vision tower's images, the omni stage's
    examples)."""

    def __init__(self, size: int, batch: int, seed: int, rank: int = 0, world_size: int = 1):
        self.size, self.batch, self.seed, self.rank, self.world_size = size, batch, seed, rank, world_size
        self.steps_per_epoch = max(1, size // (batch * world_size))
        self.epoch = self.step = 0

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        start = (self.step * self.world_size + self.rank) * self.batch
        self.step += 1
        if self.step == self.steps_per_epoch:
            self.epoch, self.step = self.epoch + 1, 0
        return self.collate(order[start:start + self.batch])

    def collate(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "world_size": self.world_size, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.step = state["epoch"], state["step"]


class PackedLoader:
    """An iterator of batches of packed rows: {"input_ids", "labels", "position_ids"} LongTensors [B, seq_len].

    Epoch e visits the rows in the order numpy.random.default_rng(seed + e).permutation(len(rows)), cut into
    batches of batch_size; global batch k of the epoch goes to rank k % world_size, so ranks see disjoint rows
    and take the same number of steps, steps_per_epoch = len(rows) // (batch_size · world_size). The last
    len(rows) % (batch_size · world_size) rows of each epoch's order are skipped (different rows each epoch).

    The loader is its own iterator and runs forever (epochs=None) or for `epochs` epochs. Its position is
    (epoch, step): state_dict() after n batches, given to load_state_dict() of a fresh loader built with the same
    arguments, makes it yield exactly what this one yields next. The state is the same on every rank.
    Batches reach the device through `collate`; with_docs=True adds "doc_ids".
    """

    def __init__(self, data: TokenData, rows: list[Row], batch_size: int, seq_len: int, seed: int,
                 rank: int = 0, world_size: int = 1, pad_id: int = 0, device: str | torch.device = "cpu",
                 epochs: int | None = None, with_docs: bool = False):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.steps_per_epoch = len(rows) // (batch_size * world_size)
        if self.steps_per_epoch == 0:
            raise MiniMindError(f"{len(rows)} packed rows are fewer than batch_size × world_size = "
                                f"{batch_size} × {world_size}: use more data, or a smaller batch or seq_len")
        self.data, self.rows, self.batch_size, self.seq_len, self.seed = data, rows, batch_size, seq_len, seed
        self.rank, self.world_size, self.pad_id, self.epochs = rank, world_size, pad_id, epochs
        self.with_docs = with_docs
        self.device = torch.device(device)
        self.epoch, self.step = 0, 0
        self._order_epoch, self._order = -1, None

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self.epochs is not None and self.epoch >= self.epochs:
            raise StopIteration
        if self._order_epoch != self.epoch:
            self._order = np.random.default_rng(self.seed + self.epoch).permutation(len(self.rows))
            self._order_epoch = self.epoch
        first = (self.step * self.world_size + self.rank) * self.batch_size
        rows = [build_row(self.data, self.rows[i], self.seq_len, self.pad_id, self.with_docs)
                for i in self._order[first:first + self.batch_size]]
        self.step += 1
        if self.step == self.steps_per_epoch:
            self.epoch, self.step = self.epoch + 1, 0
        return collate(rows, self.device)

    def state_dict(self) -> dict:
        """The position of the next batch, and what it depends on (checked on load)."""
        return {"epoch": self.epoch, "step": self.step, "seed": self.seed, "batch_size": self.batch_size,
                "world_size": self.world_size, "seq_len": self.seq_len, "num_rows": len(self.rows)}

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()
        for key in ("seed", "batch_size", "world_size", "seq_len", "num_rows"):
            if state.get(key) != mine[key]:
                raise MiniMindError(f"loader state: {key} = {state.get(key)!r}, but this loader has {mine[key]!r} "
                                    "(resuming needs the same data, packing and batch layout)")
        if not 0 <= state["step"] < self.steps_per_epoch or state["epoch"] < 0:
            raise MiniMindError(f"loader state: step {state['step']} of epoch {state['epoch']} is out of range "
                                f"(0 ≤ step < {self.steps_per_epoch})")
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
