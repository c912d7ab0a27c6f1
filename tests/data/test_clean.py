"""`minimind data clean`: each rule on hand-made records (kept / removed, with the reason), exact and near
duplicates, PII placeholders, the rejects file complete (input = kept + rejected, by line), determinism (same seed,
same bytes, whatever the number of workers), and resuming an interrupted run."""

import json

import numpy as np
import pytest

from minimind.cli import main
from minimind.data import clean as clean_module
from minimind.data.clean import CleanConfig, clean
from minimind.data.minhash import LSHIndex, MinHasher
from minimind.data.quality import quality_problem, scrub

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
    ("Le renard brun saute par-dessus le chien paresseux pendant que le fermier regarde depuis le porche.",
     "language"),
    ("Der schnelle braune Fuchs springt über den faulen Hund, während der Bauer von der Veranda zusieht.",
     "language"),
    ("Multiply 852 by 26. 852 * 26 = 22152. Split 26 into 20 + 6 and multiply each part.", None),   # digits aside
    ("cheap flights hotels deals london paris rome berlin madrid cars rental insurance quotes online booking "
     "discount travel packages cruise tickets airport parking holiday cottages beach resorts family breaks city "
     "tours museum passes train fares coach trips ferry crossings camping sites ski chalets golf courses spa "
     "weekends wedding venues conference rooms student hostels luxury villas pet friendly lodges last minute "
     "offers", "stop_words"),                                                      # keyword spam
    ("".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(80)), "stop_words"),     # random characters
    ("床前明月光，疑是地上霜。举头望明月，低头思故乡。" * 1 + "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。"
     "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。", None),                          # classical poems pass
])
def test_each_quality_rule(text, rule):
    assert quality_problem(text, CleanConfig())[0] == rule


def test_languages_are_told_apart_and_can_all_be_kept():
    assert quality_problem(PROSE, CleanConfig()) == (None, "en")
    assert quality_problem(ZH, CleanConfig()) == (None, "zh")
    french = "Le renard brun saute par-dessus le chien paresseux pendant que le fermier regarde depuis le porche."
    assert quality_problem(french, CleanConfig()) == ("language", "fr")
    assert quality_problem(french, CleanConfig(languages=["en", "fr"])) == (None, "fr")
    assert quality_problem(french, CleanConfig(languages=[])) == (None, None)


def near(index: LSHIndex, hasher: MinHasher, text: str):
    """The index's match for `text`, indexing it when there is none."""
    signature = hasher.signature(text)
    match = index.match(signature)
    if match is None:
        index.add(signature)
    return match


def test_near_duplicates_are_found_and_distinct_texts_are_not():
    index, hasher = LSHIndex(), MinHasher()
    assert near(index, hasher, PROSE) is None
    edited = PROSE.replace("lazy dog", "lazy old dog")                         # a small edit
    assert near(index, hasher, edited)[0] == 0
    assert near(index, hasher, PROSE.upper().replace(" ", "  ")) == (0, 1.0)    # case and spacing do not count
    assert near(index, hasher, ZH) is None and near(index, hasher, ZH.replace("下棋", "打牌"))[0] == 1
    assert near(index, hasher, "An entirely different sentence about stars, planets and the long night sky.") is None


def test_minhash_estimates_jaccard_similarity():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in rng.permutation(400)]
    a, b = " ".join(words[:300]), " ".join(words[100:])                       # a third of each is the other's
    hasher = MinHasher(permutations=512, shingle=5)
    shingles = [{t[i:i + 5] for i in range(len(t) - 4)} for t in (a, b)]
    jaccard = len(shingles[0] & shingles[1]) / len(shingles[0] | shingles[1])
    estimate = (hasher.signature(a) == hasher.signature(b)).mean()
    assert abs(estimate - jaccard) < 0.06, (estimate, jaccard)
    assert (MinHasher(seed=3).signature(a) == MinHasher(seed=3).signature(a)).all()


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
    assert {r["duplicate_of"] for r in rejects if "duplicate_of" in r} == {f"{tmp_path / 'in.jsonl'}:1"}
    assert report["duplicate_clusters"]["sizes"]["3-5"] == 1 and report["languages"] == {"en": 1, "zh": 1}
    assert "<email>" in kept[1]["conversations"][1]["content"] and report["pii_replaced"]["email"] == 1
    assert "near_duplicate" in (tmp_path / "out" / "report.md").read_text()
    again = clean([tmp_path / "in.jsonl"], tmp_path / "again", CleanConfig(workers=2))   # same seed, same output
    for name in ("kept.jsonl", "rejects.jsonl"):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "out" / name).read_bytes()
    assert again["removed"] == report["removed"]


def corpus(tmp_path, n=60):
    """A jsonl file of distinct paragraphs, some repeated exactly or with an edit, some too short."""
    rng = np.random.default_rng(1)
    vocabulary = PROSE.lower().replace(",", "").replace(".", "").split()
    lines = []
    for i in range(n):
        text = f"Record {i}: " + " ".join(rng.choice(vocabulary, 40)) + " and the end of the story."
        lines.append({"text": text})
        if i % 5 == 0:
            lines.append({"text": text})
        if i % 7 == 0:
            lines.append({"text": text.replace("the end", "the very end")})
        if i % 11 == 0:
            lines.append({"text": "too short"})
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def test_an_interrupted_run_resumes_to_the_same_output(tmp_path, monkeypatch):
    path = corpus(tmp_path)
    whole = clean([path], tmp_path / "whole", CleanConfig(workers=1))
    monkeypatch.setattr(clean_module, "CHUNK_BYTES", 500)
    taken, take = [], clean_module.Cleaner.take

    def interrupted(self, chunk, judged):
        if len(taken) == 9:
            raise KeyboardInterrupt
        taken.append(chunk)
        take(self, chunk, judged)

    monkeypatch.setattr(clean_module.Cleaner, "take", interrupted)
    with pytest.raises(KeyboardInterrupt):
        clean([path], tmp_path / "out", CleanConfig(workers=1), checkpoint_bytes=2000)
    assert not (tmp_path / "out").exists() and (tmp_path / ".out.partial" / ".state" / "state.json").is_file()
    monkeypatch.setattr(clean_module.Cleaner, "take", take)
    said = []
    report = clean([path], tmp_path / "out", CleanConfig(workers=1), checkpoint_bytes=2000, log=said.append)
    assert said and said[0].startswith(f"resuming after {path}:") and report["resumed"] == 1
    for name in ("kept.jsonl", "rejects.jsonl"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    assert report["removed"] == whole["removed"] and report["kept"] == whole["kept"]
    assert report["duplicate_clusters"] == whole["duplicate_clusters"]
    assert not (tmp_path / ".out.partial").exists()


def test_a_changed_config_starts_over(tmp_path, monkeypatch):
    path = corpus(tmp_path, n=20)
    monkeypatch.setattr(clean_module, "CHUNK_BYTES", 500)
    monkeypatch.setattr(clean_module.Cleaner, "report", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        clean([path], tmp_path / "out", CleanConfig(workers=1), checkpoint_bytes=500)
    monkeypatch.undo()
    said = []
    report = clean([path], tmp_path / "out", CleanConfig(workers=1, near_threshold=0.9), log=said.append)
    assert said == ["the inputs or the config changed since the last run: starting over"] and not report["resumed"]


def test_cli(tmp_path, capsys):
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": PROSE}) + "\n" + json.dumps({"text": PROSE}) + "\n")
    assert main(["data", "clean", "--in", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "o"),
                 "near_threshold=0.9"]) == 0
    assert "1 of 2 records kept; removed: exact_duplicate 1" in capsys.readouterr().out
    assert main(["data", "clean", "--in", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "o"),
                 "bands=7"]) == 2
    (tmp_path / "clean.yaml").write_text("languages: [en, klingon]\n")
    assert main(["data", "clean", "--in", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "o"),
                 "--config", str(tmp_path / "clean.yaml")]) == 2
    assert "'languages' has ['klingon']" in capsys.readouterr().err


def test_the_shipped_preset_spells_out_the_defaults():
    from pathlib import Path

    import yaml

    from minimind.overrides import to_dict

    preset = yaml.safe_load((Path(__file__).parents[2] / "configs" / "clean.yaml").read_text())
    assert preset == to_dict(CleanConfig())
