"""`minimind data clean`: each rule on hand-made records (kept / removed, with the reason), exact and near
duplicates, PII placeholders, the rejects file complete (input = kept + rejected, by line), and determinism."""

import json

import pytest

from minimind.cli import main
from minimind.data.clean import CleanConfig, NearDuplicates, clean, quality_problem, scrub

PROSE = ("The quick brown fox jumps over the lazy dog while the farmer watches from the porch, "
         "thinking about the harvest and the long winter that is coming.")
ZH = "今天天气很好，我们一起去公园散步，看到很多人在放风筝，孩子们在草地上奔跑，老人们在树下下棋聊天。"


@pytest.mark.parametrize("text, rule", [
    (PROSE, None),
    (ZH, None),
    ("too short", "too_short"),
    ("怎么了? 不怎么的", None),                              # seven CJK words: short, but a sentence
    ("#$%^&*()!@" * 10 + " some more words here to read", "symbol_ratio"),
    ("1234567890 " * 10 + "a few more words here", "digit_ratio"),
    ("buy now\n" * 6 + "something else entirely here", "repeated_lines"),
    ("click here now " * 20, "repeated_ngram"),
    ("点击这里立即购买" * 20, "repeated_ngram"),
])
def test_each_quality_rule(text, rule):
    assert quality_problem(text, CleanConfig()) == rule


def test_near_duplicates_are_found_and_distinct_texts_are_not():
    near = NearDuplicates(CleanConfig())
    assert near.seen(PROSE) is None
    edited = PROSE.replace("lazy dog", "lazy old dog")                         # a small edit
    assert near.seen(edited) is not None
    assert near.seen(ZH) is None and near.seen(ZH.replace("下棋", "打牌")) is not None
    assert near.seen("An entirely different sentence about stars, planets and the long night sky.") is None


def test_pii_becomes_placeholders():
    text, found = scrub("Mail bob.smith@example.com or call +86 13812345678; ID 11010519491231002X, card "
                        "4111 1111 1111 1111.")
    assert "<email>" in text and "<phone>" in text and "<id>" in text and "<card>" in text
    assert "example.com" not in text and "13812345678" not in text and "4111" not in text
    assert found["email"] == found["phone"] == found["id_number"] == found["card_number"] == 1


def test_every_line_is_kept_or_rejected_with_its_reason(tmp_path):
    records = [{"text": PROSE}, {"text": PROSE}, {"text": PROSE.replace("porch", "old porch")}, {"text": "short"},
               {"conversations": [{"role": "user", "content": "你好，请介绍一下你自己好吗？"},
                                  {"role": "assistant", "content": ZH + " 邮件：li@example.com"}]}]
    lines = [json.dumps(r, ensure_ascii=False) for r in records] + ["{broken"]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = clean([tmp_path / "in.jsonl"], tmp_path / "out")
    kept = [json.loads(line) for line in (tmp_path / "out" / "kept.jsonl").open(encoding="utf-8")]
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").open(encoding="utf-8")]
    assert len(kept) + len(rejects) == 6 == report["records"]
    assert {r["rule"]: r["source"].rsplit(":", 1)[1] for r in rejects} == {
        "exact_duplicate": "2", "near_duplicate": "3", "too_short": "4", "unreadable": "6"}
    assert "<email>" in kept[1]["conversations"][1]["content"] and report["pii_replaced"]["email"] == 1
    assert "near_duplicate" in (tmp_path / "out" / "report.md").read_text()
    again = clean([tmp_path / "in.jsonl"], tmp_path / "again")                 # same seed, same output
    assert (tmp_path / "again" / "kept.jsonl").read_bytes() == (tmp_path / "out" / "kept.jsonl").read_bytes()
    assert again["removed"] == report["removed"]


def test_cli(tmp_path, capsys):
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": PROSE}) + "\n" + json.dumps({"text": PROSE}) + "\n")
    assert main(["data", "clean", "--in", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "o"),
                 "near_threshold=0.9"]) == 0
    assert "1 of 2 records kept; removed: exact_duplicate 1" in capsys.readouterr().out
    assert main(["data", "clean", "--in", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "o"),
                 "bands=7"]) == 2
