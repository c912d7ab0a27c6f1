import json

import numpy as np
import pytest
import torch

from minimind.data.loader import PackedLoader, TokenData, build_row
from minimind.data.packing import pack_pretrain, pack_sft
from minimind.errors import MiniMindError


def make_data(lengths, seed=0, sft=False):
    """Document d's token i is 1000·d + i + 1 (never 0, the pad id); SFT masks are random."""
    tokens = np.concatenate([1000 * d + np.arange(n) + 1 for d, n in enumerate(lengths)] + [[]]).astype(np.uint32)
    mask = np.random.default_rng(seed).integers(0, 2, len(tokens)) if sft else np.ones(len(tokens))
    return TokenData.from_arrays(tokens, mask, np.concatenate([[0], np.cumsum(lengths)]))


def write_prepared(path, data, dtype="uint16", **meta):
    path.mkdir(exist_ok=True)
    data.tokens.astype(dtype).tofile(path / "tokens.bin")
    data.mask.astype(np.uint8).tofile(path / "mask.bin")
    data.offsets.astype(np.int64).tofile(path / "offsets.bin")
    meta = {"stage": "sft", "dtype": dtype, "num_tokens": data.num_tokens, "num_docs": data.num_docs} | meta
    (path / "meta.json").write_text(json.dumps(meta))
    return path


# ---- TokenData ------------------------------------------------------------------------------------------------

def test_token_data_views_and_open_round_trip(tmp_path):
    data = make_data([3, 0, 5], sft=True)
    assert data.doc_lengths.tolist() == [3, 0, 5] and (data.num_docs, data.num_tokens) == (3, 8)
    ids, mask = data.doc(2)
    assert ids.tolist() == [2001, 2002, 2003, 2004, 2005] and np.shares_memory(ids, data.tokens)
    opened = TokenData.open(write_prepared(tmp_path / "d", data))
    assert isinstance(opened.tokens, np.memmap) and opened.tokens.dtype == np.uint16
    assert opened.meta["stage"] == "sft" and opened.doc_lengths.tolist() == [3, 0, 5]
    for d in range(3):
        assert all(np.array_equal(a, b) for a, b in zip(opened.doc(d), data.doc(d), strict=True))
    empty = TokenData.open(write_prepared(tmp_path / "e", make_data([])))
    assert (empty.num_docs, empty.num_tokens) == (0, 0)


@pytest.mark.parametrize("damage, named", [
    (lambda p: (p / "meta.json").unlink(), "meta.json"),
    (lambda p: (p / "meta.json").write_text("{"), "meta.json"),
    (lambda p: (p / "meta.json").write_text(json.dumps({"dtype": "int8", "num_tokens": 8, "num_docs": 3})),
     "meta.json"),
    (lambda p: (p / "tokens.bin").write_bytes(b"\0" * 15), "tokens.bin"),
    (lambda p: (p / "tokens.bin").unlink(), "tokens.bin"),
    (lambda p: (p / "mask.bin").write_bytes(b"\1" * 9), "mask.bin"),
    (lambda p: np.array([0, 3, 3], dtype=np.int64).tofile(p / "offsets.bin"), "offsets.bin"),
    (lambda p: np.array([0, 3, 9, 8], dtype=np.int64).tofile(p / "offsets.bin"), "offsets.bin"),
])
def test_open_names_the_bad_file(tmp_path, damage, named):
    path = write_prepared(tmp_path / "d", make_data([3, 0, 5]))
    damage(path)
    with pytest.raises(MiniMindError, match=named):
        TokenData.open(path)


# ---- build_row ------------------------------------------------------------------------------------------------

def test_build_row_by_hand():
    data = TokenData.from_arrays([5, 6, 7, 8, 9, 10], [0, 1, 1, 1, 0, 1], [0, 4, 6])
    row = build_row(data, [(0, 1, 3), (1, 0, 2)], seq_len=8, pad_id=0)
    assert row["input_ids"].tolist() == [6, 7, 8, 9, 10, 0, 0, 0]
    assert row["labels"].tolist() == [-100, 7, 8, -100, 10, -100, -100, -100]
    assert row["position_ids"].tolist() == [0, 1, 2, 0, 1, 0, 1, 2]
    assert all(a.dtype == np.int64 and a.shape == (8,) for a in row.values())
    with pytest.raises(ValueError, match="more than seq_len"):
        build_row(data, [(0, 0, 4), (1, 0, 2)], seq_len=5, pad_id=0)


@pytest.mark.parametrize("packer", [pack_pretrain, pack_sft])
def test_labels_never_target_padding_or_a_piece_start(packer):
    lengths, seq_len = np.random.default_rng(1).integers(1, 30, size=200), 16
    data = make_data(lengths, sft=True)
    for row in packer(lengths, seq_len):
        out = build_row(data, row, seq_len, pad_id=0)
        ids, labels, pos = out["input_ids"], out["labels"], out["position_ids"]
        real = sum(p[2] for p in row)
        assert np.all(ids[real:] == 0) and np.all(labels[real:] == -100)            # padding: never a target
        assert pos[real:].tolist() == list(range(seq_len - real))                  # …and its own "document"
        t = 0
        for doc, start, length in row:
            piece_ids, piece_mask = (a[start:start + length] for a in data.doc(doc))
            assert np.array_equal(ids[t:t + length], piece_ids)
            assert pos[t:t + length].tolist() == list(range(length))
            assert labels[t] == -100                                                # a piece's first token
            expected = np.where(piece_mask[1:] == 1, piece_ids[1:].astype(np.int64), -100)
            assert np.array_equal(labels[t + 1:t + length], expected)              # elsewhere: the masked token
            t += length


# ---- PackedLoader ---------------------------------------------------------------------------------------------

def one_doc_rows(n, seq_len=6):
    """n single-document rows; a batch's input_ids[:, 0] // 1000 are its row ids."""
    return make_data([seq_len] * n), [[(d, 0, seq_len)] for d in range(n)]


def row_ids(batch):
    return (batch["input_ids"][:, 0] // 1000).tolist()


def take(loader, n):
    return [next(loader) for _ in range(n)]


def test_loader_batches_and_determinism():
    data, rows = one_doc_rows(10)
    batch = next(PackedLoader(data, rows, batch_size=4, seq_len=8, seed=0))
    assert {k: (v.dtype, tuple(v.shape)) for k, v in batch.items()} == {
        k: (torch.int64, (4, 8)) for k in ("input_ids", "labels", "position_ids")}
    assert batch["labels"][:, 6:].eq(-100).all() and batch["position_ids"][0].tolist() == [0, 1, 2, 3, 4, 5, 0, 1]

    def epochs(seed, n=3):
        loader = PackedLoader(data, rows, batch_size=4, seq_len=8, seed=seed)
        assert loader.steps_per_epoch == 2                          # 10 // 4: two rows skipped per epoch
        return [row_ids(b) for b in take(loader, 2 * n)]

    run = epochs(seed=0)
    assert run == epochs(seed=0) and run != epochs(seed=1)
    for e in range(3):                                              # order = default_rng(seed + epoch)
        order = np.random.default_rng(e).permutation(10)[:8].tolist()
        assert run[2 * e] + run[2 * e + 1] == order
    assert len({tuple(sorted(run[2 * e] + run[2 * e + 1])) for e in range(3)}) > 1  # a different tail is skipped


def test_ranks_are_disjoint_and_cover_the_epoch():
    data, rows = one_doc_rows(24)
    loaders = [PackedLoader(data, rows, batch_size=3, seq_len=6, seed=5, rank=r, world_size=4) for r in range(4)]
    assert {lo.steps_per_epoch for lo in loaders} == {2}
    seen = [sum((row_ids(b) for b in take(lo, 2)), []) for lo in loaders]
    assert sorted(sum(seen, [])) == list(range(24))                 # disjoint, and together every row
    ragged = [PackedLoader(data, rows[:23], batch_size=3, seq_len=6, seed=5, rank=r, world_size=4) for r in range(4)]
    assert {lo.steps_per_epoch for lo in ragged} == {1}             # the same number of steps on every rank


def test_resume_mid_epoch_and_across_epochs():
    data, rows = one_doc_rows(11)
    loader = PackedLoader(data, rows, batch_size=2, seq_len=6, seed=3)      # 5 steps per epoch
    expected = [row_ids(b) for b in take(PackedLoader(data, rows, batch_size=2, seq_len=6, seed=3), 14)]
    got = []
    for n in (2, 3, 4, 1, 4):                                       # stops mid-epoch and on epoch boundaries
        got += [row_ids(b) for b in take(loader, n)]
        state = json.loads(json.dumps(loader.state_dict()))
        loader = PackedLoader(data, rows, batch_size=2, seq_len=6, seed=3)
        loader.load_state_dict(state)
    assert got == expected
    assert loader.state_dict() == {"epoch": 2, "step": 4, "seed": 3, "batch_size": 2, "world_size": 1, "seq_len": 6,
                                   "num_rows": 11}


def test_epochs_bound_and_bad_arguments():
    data, rows = one_doc_rows(5)
    assert len(list(PackedLoader(data, rows, batch_size=2, seq_len=6, seed=0, epochs=3))) == 6
    with pytest.raises(MiniMindError, match="fewer than batch_size"):
        PackedLoader(data, rows, batch_size=3, seq_len=6, seed=0, world_size=2)
    state = PackedLoader(data, rows, batch_size=2, seq_len=6, seed=0).state_dict()
    with pytest.raises(MiniMindError, match="seed"):
        PackedLoader(data, rows, batch_size=2, seq_len=6, seed=1).load_state_dict(state)
    with pytest.raises(MiniMindError, match="num_rows"):
        PackedLoader(data, rows[:4], batch_size=2, seq_len=6, seed=0).load_state_dict(state)


def test_target_report_counts_what_packing_keeps():
    """Three documents (5, 3 and 10 tokens): SFT rows of 6 cut the third to its first 6 tokens (4 of its 7
    targets lost); pretraining rows tile every token but each cut costs the piece's first target."""
    from minimind.data.loader import target_report
    from minimind.data.packing import pack_pretrain, pack_sft

    mask = [0, 0, 1, 1, 1, 0, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1]
    data = TokenData.from_arrays(np.zeros(18, dtype=np.uint16), mask, np.array([0, 5, 8, 18]))
    sft = target_report(data, pack_sft(data.doc_lengths, 6))
    assert sft == {"docs": 3, "docs_truncated": 1, "targets": 12, "targets_kept": 8, "targets_lost": 4}
    pretrain = target_report(data, pack_pretrain(data.doc_lengths, 6))
    assert pretrain["docs_truncated"] == 0 and pretrain["targets_kept"] + pretrain["targets_lost"] == 12
    assert pretrain["targets_lost"] == 2                      # two cuts, one target each
