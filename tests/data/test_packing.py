import numpy as np
import pytest

from minimind.data.packing import pack_pretrain, pack_sft, packing_stats


def coverage(rows, lengths):
    """How many times each token of each document is placed: a list of int arrays, one per document."""
    seen = [np.zeros(n, dtype=int) for n in lengths]
    for row in rows:
        for doc, start, length in row:
            assert length >= 1 and 0 <= start and start + length <= lengths[doc]
            seen[doc][start:start + length] += 1
    return seen


def random_lengths(seed, n=300, high=40):
    lengths = np.random.default_rng(seed).integers(0, high, size=n)
    lengths[:3] = [0, 3 * 16 + 5, 2 * 16]          # an empty document, and two longer than seq_len
    return lengths


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pretrain_rows_are_full_and_tile_every_document_once(seed):
    lengths, seq_len = random_lengths(seed), 16
    rows = pack_pretrain(lengths, seq_len)
    assert all(sum(p[2] for p in row) == seq_len for row in rows)
    counts = np.concatenate(coverage(rows, lengths))
    assert set(np.unique(counts)) <= {0, 1}
    dropped = len(counts) - counts.sum()                       # only the final partial row is dropped
    assert dropped == lengths.sum() - len(rows) * seq_len and 0 <= dropped < seq_len

    kept = pack_pretrain(lengths, seq_len, drop_last=False)
    assert np.all(np.concatenate(coverage(kept, lengths)) == 1)
    assert kept[:len(rows)] == rows and len(kept) - len(rows) == (dropped > 0)
    assert pack_pretrain(lengths, seq_len) == rows             # deterministic


def test_pretrain_long_documents_give_full_chunks_and_each_row_has_at_most_one_cut():
    rows = pack_pretrain([20, 3], seq_len=8, drop_last=False)
    assert rows[:2] == [[(0, 0, 8)], [(0, 8, 8)]]
    assert rows[2:] == [[(0, 16, 4), (1, 0, 3)]]               # the remainder packs like a document
    lengths = random_lengths(3, n=2000)
    for row in pack_pretrain(lengths, seq_len=16):           # only a row's last piece may stop inside its document
        assert all(start + length == lengths[doc] for doc, start, length in row[:-1])


def test_pretrain_best_fit_with_cropping_by_hand():
    # row 1: 5 (doc 0), no rest fits the 3 left → the shortest (doc 1) is cut, its tail 2 goes back;
    # row 2: 5 (doc 2) + the tail of doc 1, then the pool is dry: a partial row of 7
    assert pack_pretrain([5, 5, 5], 8, drop_last=False) == [[(0, 0, 5), (1, 0, 3)], [(2, 0, 5), (1, 3, 2)]]
    assert pack_pretrain([5, 5, 5], 8) == [[(0, 0, 5), (1, 0, 3)]]
    assert pack_pretrain([3, 5, 2, 6], 8) == [[(3, 0, 6), (2, 0, 2)], [(1, 0, 5), (0, 0, 3)]]
    assert pack_pretrain([], 8) == [] and pack_pretrain([0, 0], 8) == []


@pytest.mark.parametrize("seed", [0, 1])
def test_sft_keeps_conversations_whole_and_truncates_long_ones(seed):
    lengths, seq_len = random_lengths(seed), 16
    rows = pack_sft(lengths, seq_len)
    pieces = [p for row in rows for p in row]
    assert sorted(p[0] for p in pieces) == [d for d in range(len(lengths)) if lengths[d] > 0]
    assert all(p == (p[0], 0, min(lengths[p[0]], seq_len)) for p in pieces)
    assert all(1 <= sum(p[2] for p in row) <= seq_len for row in rows)
    assert pack_sft(lengths, seq_len) == rows


def test_sft_best_fit_decreasing_by_hand():
    assert pack_sft([3, 5, 2, 6], 8) == [[(3, 0, 6), (2, 0, 2)], [(1, 0, 5), (0, 0, 3)]]
    # 7 → row A (1 free), 5 → row B (3 free), 3 → B (the tightest that holds it), 2 → no room: row C
    assert pack_sft([3, 5, 2, 7], 8) == [[(3, 0, 7)], [(1, 0, 5), (0, 0, 3)], [(2, 0, 2)]]
    assert pack_sft([5, 4, 3, 3], 8) == [[(0, 0, 5), (2, 0, 3)], [(1, 0, 4), (3, 0, 3)]]
    assert pack_sft([12, 0, 1], 8) == [[(0, 0, 8)], [(2, 0, 1)]]


def test_packing_stats_by_hand():
    stats = packing_stats(pack_sft([3, 5, 2, 7], 8), [3, 5, 2, 7], 8)
    assert stats | {"efficiency": 0, "padded_efficiency": 0} == {
        "rows": 3, "docs": 4, "pieces": 4, "cuts": 0, "tokens": 17, "packed": 17, "padding": 7, "dropped": 0,
        "efficiency": 0, "padded_efficiency": 0}
    assert stats["efficiency"] == pytest.approx(17 / 24) and stats["padded_efficiency"] == pytest.approx(17 / 32)

    stats = packing_stats(pack_pretrain([3, 5, 2, 6], 8), [3, 5, 2, 6], 8)
    assert (stats["rows"], stats["padding"], stats["efficiency"], stats["padded_efficiency"]) == (2, 0, 1.0, 0.5)

    lengths = [5, 5, 5, 12]                                    # 12 = a full row + a rest of 4
    stats = packing_stats(pack_pretrain(lengths, 8), lengths, 8)
    assert (stats["tokens"], stats["packed"], stats["dropped"], stats["padding"]) == (27, 24, 3, 0)
    assert stats["padded_efficiency"] == pytest.approx((5 + 5 + 5 + 8) / 32)
    assert (stats["pieces"], stats["cuts"]) == (6, 2)             # doc 3's rest and doc 2 were cut
