import json

import numpy as np
import pytest

from minimind.data.prepare import prepare
from minimind.errors import MiniMindError
from minimind.tokenizer import load_tokenizer
from minimind.tokenizer.tokenizer import DEFAULT_DIR


def write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def arrays(out):
    meta = json.loads((out / "meta.json").read_text())
    tokens = np.fromfile(out / "tokens.bin", dtype=meta["dtype"])
    return meta, tokens, np.fromfile(out / "mask.bin", dtype=np.uint8), np.fromfile(out / "offsets.bin", np.int64)


def test_pretrain(tmp_path):
    tok = load_tokenizer()
    data = write(tmp_path / "p.jsonl", [{"text": "To be, or not to be"}, {"text": "学而时习之"}])
    meta = prepare([data], "pretrain", DEFAULT_DIR, tmp_path / "out", progress=False)
    assert not meta["cache_hit"] and meta["num_docs"] == 2 and meta["dtype"] == "uint16"
    _, tokens, mask, offsets = arrays(tmp_path / "out")
    first = [1, *tok.encode("To be, or not to be"), 2]
    assert tokens[offsets[0]:offsets[1]].tolist() == first
    assert tokens[offsets[1]:offsets[2]].tolist() == [1, *tok.encode("学而时习之"), 2]
    assert mask.all() and offsets[-1] == len(tokens) == meta["num_tokens"]


def test_cache_hit_and_invalidation(tmp_path):
    data = write(tmp_path / "p.jsonl", [{"text": "hello"}])
    assert not prepare([data], "pretrain", DEFAULT_DIR, tmp_path / "out", progress=False)["cache_hit"]
    assert prepare([data], "pretrain", DEFAULT_DIR, tmp_path / "out", progress=False)["cache_hit"]
    write(data, [{"text": "hello"}, {"text": "world"}])
    meta = prepare([data], "pretrain", DEFAULT_DIR, tmp_path / "out", progress=False)
    assert not meta["cache_hit"] and meta["num_docs"] == 2


def test_sft_and_dpo_masks(tmp_path):
    tok = load_tokenizer()
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    data = write(tmp_path / "s.jsonl", [{"conversations": chat}])
    prepare([data], "sft", DEFAULT_DIR, tmp_path / "sft", progress=False)
    _, tokens, mask, _ = arrays(tmp_path / "sft")
    ids, expected = tok.render_chat(chat)
    assert tokens.tolist() == ids and mask.tolist() == expected and 0 < mask.sum() < len(mask)

    bad = chat[:1] + [{"role": "assistant", "content": "go away"}]
    data = write(tmp_path / "d.jsonl", [{"chosen": chat, "rejected": bad}])
    meta = prepare([data], "dpo", DEFAULT_DIR, tmp_path / "dpo", progress=False)
    _, tokens, _, offsets = arrays(tmp_path / "dpo")
    assert meta["num_docs"] == 2
    assert tok.decode(tokens[offsets[1]:offsets[2]]).endswith("go away<|im_end|>\n")


def test_rl_prompts_and_records(tmp_path):
    data = write(tmp_path / "r.jsonl", [{"conversations": [{"role": "user", "content": "2+3?"}], "answer": "5"}])
    prepare([data], "rl", DEFAULT_DIR, tmp_path / "rl", progress=False)
    _, tokens, mask, _ = arrays(tmp_path / "rl")
    assert load_tokenizer().decode(tokens).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert mask.sum() == 0
    assert json.loads((tmp_path / "rl" / "records.jsonl").read_text())["answer"] == "5"


def test_bad_lines_fail_or_are_skipped(tmp_path):
    data = tmp_path / "p.jsonl"
    data.write_text('{"text": "ok"}\n{"text": 5}\n')
    with pytest.raises(MiniMindError, match=r"p.jsonl:2: text: must be a string"):
        prepare([data], "pretrain", DEFAULT_DIR, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    meta = prepare([data], "pretrain", DEFAULT_DIR, tmp_path / "out", skip_bad_lines=True, progress=False)
    assert meta["skipped_lines"] == 1 and meta["num_docs"] == 1


def test_never_overwrites_a_directory_it_did_not_write(tmp_path):
    data = write(tmp_path / "p.jsonl", [{"text": "hello"}])
    with pytest.raises(MiniMindError, match="exists and is not a directory this command wrote"):
        prepare([data], "pretrain", DEFAULT_DIR, tmp_path, progress=False)
    assert data.is_file()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "meta.json").write_text("{corrupt")          # a damaged earlier output is rebuilt
    assert not prepare([data], "pretrain", DEFAULT_DIR, tmp_path / "out", progress=False)["cache_hit"]
