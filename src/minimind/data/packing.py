"""Packing: documents of any length → rows of exactly `seq_len` token slots, planned once from the lengths alone.

A row is a list of pieces `(doc, start, length)`: tokens[start : start + length] of document `doc`, laid end to
end. Whatever a row's pieces leave free at its end, `seq_len - sum(length)`, is padding; both packers return this
same type, so one loader serves both stages. A row is `seq_len` tokens, not `seq_len + 1`: the model shifts the
labels itself (position t learns labels[t+1]), so a row's last position simply has no target. A piece's first
token is never a target either (attention stays inside the piece, so it has no context): a cut costs one target.

pack_pretrain — "best fit with cropping": zero padding, and no token lost but those of a final partial row:
    1. A document longer than seq_len gives `len // seq_len` full rows of its own (consecutive chunks); its
       remainder (the tail, < seq_len) joins the pool like any short document.
    2. Rows are filled one at a time. Into the row's free room goes the longest pooled piece that fits whole
       (ties: first come, first served — documents in id order, tails returned to the pool behind them). When
       every pooled piece is longer than the room, the shortest one is cut: its head fills the row exactly and
       its tail goes back into the pool, to start a later row or fill one. So every row holds exactly seq_len
       tokens and at most one cut piece, its last.
    3. The final row, when the pool runs dry before it is full, is dropped (drop_last=True, default: fewer than
       seq_len tokens of the whole corpus) or kept partial (drop_last=False: the loader pads it).

pack_sft — best-fit decreasing of whole conversations, never cut:
    Conversations are taken longest first (ties: lowest id first); each goes into the open row with the least
    free room that still holds it (ties: the row that came to that room last), or starts a new row. A
    conversation longer than seq_len is truncated to its first seq_len tokens (a full row; nothing after it is
    ever a target). The free room left at the end of a row is padding.

pack_whole — pack_sft for documents that must stay whole (vision): one longer than seq_len is left out.

Cost: the pool (and, for SFT, the open rows) are bucketed by length in [1, seq_len], with a sorted list of the
non-empty bucket lengths; "longest that fits" / "tightest row that fits" is one bisect in that list (≤ seq_len
entries). Each piece costs O(log seq_len): 1M documents of 1..2000 tokens pack into rows of 2048 in ~2 s.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections import deque
from itertools import chain

import numpy as np

from minimind.errors import MiniMindError

Piece = tuple[int, int, int]   # (doc, start, length)
Row = list[Piece]


def _lengths(doc_lengths, seq_len: int) -> np.ndarray:
    if seq_len < 1:
        raise ValueError(f"seq_len must be ≥ 1, got {seq_len}")
    lengths = np.asarray(doc_lengths, dtype=np.int64).reshape(-1)
    if lengths.size and lengths.min() < 0:
        raise ValueError("document lengths must be ≥ 0")
    return lengths


def pack_pretrain(doc_lengths, seq_len: int, drop_last: bool = True) -> list[Row]:
    """doc_lengths [D] → rows of pieces that tile every document exactly once, each row exactly seq_len tokens.

    Rows are in a fixed order (the long documents' full chunks first); the loader shuffles them.
    """
    lengths = _lengths(doc_lengths, seq_len)
    rows: list[Row] = []
    full = lengths // seq_len
    for d in np.flatnonzero(full).tolist():                      # 1. whole chunks of long documents
        rows.extend([(d, k * seq_len, seq_len)] for k in range(int(full[d])))

    # The pool: pool[n] holds the ids of documents whose unplaced rest is n tokens long (a document has at most
    # one rest in the pool), `done[d]` counts the tokens of d already placed, `avail` lists the non-empty n's.
    rest = lengths - full * seq_len
    done = (full * seq_len).tolist()
    pool: list[deque] = [deque() for _ in range(seq_len)]
    ids = np.flatnonzero(rest)
    for d, n in zip(ids.tolist(), rest[ids].tolist(), strict=True):
        pool[n].append(d)                                        # in id order within each length
    avail = np.unique(rest[ids]).tolist()

    while avail:                                                 # 2. fill rows one at a time
        row, room = [], seq_len
        while room and avail:
            i = bisect_right(avail, room) - 1                    # the longest rest that fits whole,
            i = i if i >= 0 else 0                               # else the shortest one
            n = avail[i]
            bucket = pool[n]
            d = bucket.popleft()
            if not bucket:
                del avail[i]
            k = n if n <= room else room                         # all of it, or the head that fills the row
            row.append((d, done[d], k))
            done[d] += k
            room -= k
            if k < n:                                            # the tail goes back into the pool
                if not pool[n - k]:
                    insort(avail, n - k)
                pool[n - k].append(d)
        if room == 0 or not drop_last:                           # 3. the final row may be partial
            rows.append(row)
    return rows


def pack_sft(doc_lengths, seq_len: int) -> list[Row]:
    """doc_lengths [D] → rows of whole conversations `(d, 0, min(len, seq_len))`, best-fit decreasing.

    Each non-empty conversation is in exactly one row; a row's free room at its end, seq_len - Σ length, is padding.
    """
    lengths = np.minimum(_lengths(doc_lengths, seq_len), seq_len)
    order = np.argsort(-lengths, kind="stable")
    rows: list[Row] = []
    open_rows: list[list[int]] = [[] for _ in range(seq_len)]   # open_rows[r] = ids of rows with r slots free
    avail: list[int] = []                                          # the non-empty r's, sorted
    for d, n in zip(order.tolist(), lengths[order].tolist(), strict=True):
        if n == 0:
            break                                                  # the rest are empty documents
        i = bisect_left(avail, n)
        if i < len(avail):                                         # the tightest open row that holds it
            room = avail[i]
            bucket = open_rows[room]
            r = bucket.pop()
            if not bucket:
                del avail[i]
        else:
            room, r = seq_len, len(rows)
            rows.append([])
        rows[r].append((d, 0, n))
        room -= n
        if room:
            if not open_rows[room]:
                insort(avail, room)
            open_rows[room].append(r)
    return rows


def pack_pairs(doc_lengths, seq_len: int) -> list[Row]:
    """Documents (chosen 2i, rejected 2i+1) → rows holding whole pairs, best-fit decreasing on the pair's length.
    A pair longer than a row is truncated (the ends cut) so that each side keeps at least half the row, or all
    of itself if shorter."""
    lengths = np.asarray(doc_lengths, dtype=np.int64)
    if len(lengths) % 2:
        raise MiniMindError(f"preference data holds {len(lengths)} documents; expected chosen/rejected pairs")
    chosen, rejected = lengths[0::2], lengths[1::2]
    over = chosen + rejected > seq_len
    keep_chosen = np.where(over, np.minimum(chosen, np.maximum(seq_len - rejected, seq_len // 2)), chosen)
    keep_rejected = np.where(over, np.minimum(rejected, seq_len - keep_chosen), rejected)
    rows = pack_sft(keep_chosen + keep_rejected, seq_len)
    return [[piece for pair, _, _ in row
             for piece in ((2 * pair, 0, int(keep_chosen[pair])), (2 * pair + 1, 0, int(keep_rejected[pair])))]
            for row in rows]


def packing_stats(rows: list[Row], doc_lengths, seq_len: int) -> dict:
    """How well `rows` use their seq_len slots, against padding every document to seq_len on its own.

        rows, docs (non-empty), pieces, cuts (pieces beyond one per document that has any),
        tokens (in the documents), packed (in the rows), padding (free slots in the rows),
        dropped (tokens in no row: truncated conversations, a dropped final row),
        efficiency        = packed / (rows · seq_len)                   the fraction of slots that are real tokens
        padded_efficiency = Σ min(len, seq_len) / (docs · seq_len)        the same, one padded row per document
    """
    lengths = _lengths(doc_lengths, seq_len)
    pieces = np.fromiter(chain.from_iterable(chain.from_iterable(rows)), dtype=np.int64).reshape(-1, 3)
    packed, slots = int(pieces[:, 2].sum()), len(rows) * seq_len
    docs = int((lengths > 0).sum())
    return {
        "rows": len(rows), "docs": docs, "pieces": len(pieces), "cuts": len(pieces) - len(np.unique(pieces[:, 0])),
        "tokens": int(lengths.sum()), "packed": packed, "padding": slots - packed,
        "dropped": int(lengths.sum()) - packed,
        "efficiency": packed / slots if slots else 0.0,
        "padded_efficiency": int(np.minimum(lengths, seq_len).sum()) / (docs * seq_len) if docs else 0.0,
    }


def pack_whole(doc_lengths, seq_len: int) -> list[Row]:
    """pack_sft for documents that must never be cut (a vision conversation: a cut would split an image's run of
    <|image_pad|> tokens): a document longer than seq_len is left out (the stage's target report counts it)."""
    lengths = _lengths(doc_lengths, seq_len)
    return pack_sft(np.where(lengths <= seq_len, lengths, 0), seq_len)


PACKERS = {"pretrain": pack_pretrain, "sft": pack_sft, "dpo": pack_pairs, "vision": pack_whole}   # format → rows

