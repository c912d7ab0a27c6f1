import json
import random

import pytest

from minimind.cli import main
from minimind.data.default.benchmark import benchmark
from minimind.errors import MiniMindError
from minimind.eval.report import markdown, model_dirs, write_report
from tests.conftest import make_model


def estimate(value, low, high, n=100):
    return {"value": value, "low": low, "high": high, "n": n}


RESULTS = {
    "pretrain": {"bpb": {"bpb": estimate(2.5, 2.4, 2.6), "uniform_bpb": 4.1},
                 "choice": {"n": 400, "acc": estimate(0.3, 0.25, 0.35), "chance": 0.25,
                            "subjects": {"en_x": {"acc": estimate(0.4, 0.3, 0.5), "chance": 0.25}}},
                 "arithmetic": {"n": 50, "accuracy": estimate(0.02, 0.0, 0.06)}},
    "sft": {"bpb": {"bpb": estimate(2.7, 2.6, 2.8), "uniform_bpb": 4.1},
            "arithmetic": {"n": 50, "accuracy": estimate(0.1, 0.04, 0.18)},
            "tools": {"n": 50, "accuracy": estimate(0.5, 0.4, 0.6), "tool_success": estimate(0.6, 0.5, 0.7)}},
}


def test_markdown_table_has_chance_and_intervals():
    text = markdown(RESULTS)
    assert "| task | chance | pretrain | sft |" in text
    assert "| bits/byte ↓ | 4.100 | 2.500 [2.400, 2.600] | 2.700 [2.600, 2.800] |" in text
    assert "| offline MCQ (all) | 25.0% | 30.0% [25.0, 35.0%] |".replace("25.0, 35.0%", "25.0%, 35.0%") in text
    assert "| en_x | 25.0% | 40.0% [30.0%, 50.0%] | – |" in text
    assert "| correct via calculator | 0.0% | – | 60.0% [50.0%, 70.0%] |" in text


def test_write_report(tmp_path):
    path = write_report(RESULTS, tmp_path / "card")
    assert path.read_text().startswith("# MiniMind report card")
    assert json.loads((tmp_path / "card" / "results.json").read_text()) == RESULTS
    assert (tmp_path / "card" / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_model_dirs(tmp_path):
    for stage in ("sft", "pretrain", "grpo"):
        make_model("tiny").save(tmp_path / "run" / stage / "model")
    (tmp_path / "run" / "prepared").mkdir()
    assert [label for label, _ in model_dirs([tmp_path / "run"])] == ["pretrain", "sft", "grpo"]
    assert model_dirs([tmp_path / "run" / "sft" / "model"]) == [("sft", tmp_path / "run" / "sft" / "model")]
    with pytest.raises(MiniMindError, match="neither a model directory"):
        model_dirs([tmp_path / "run" / "prepared"])


def test_report_command_end_to_end(tmp_path, capsys):
    make_model("tiny").save(tmp_path / "m" / "model")
    eval_dir = tmp_path / "data" / "eval"
    eval_dir.mkdir(parents=True)
    (eval_dir / "pretrain.jsonl").write_text('{"text": "To be, or not to be."}\n{"text": "一心一意"}\n')
    (eval_dir / "choice.jsonl").write_text("".join(json.dumps(
        {"task": t, "context": f"{t} {i}:", "choices": [" a", " b", " c"], "answer": i % 3}) + "\n"
        for t in ("x", "y") for i in range(6)))
    (eval_dir / "rl.jsonl").write_text('{"conversations": [{"role": "user", "content": "What is 2 + 3?"}], '
                                       '"answer": "5"}\n')
    assert main(["report", str(tmp_path / "m" / "model"), "--data", str(tmp_path / "data"),
                 "--out", str(tmp_path / "card"), "--problems", "1"]) == 0
    results = json.loads((tmp_path / "card" / "results.json").read_text())["m"]
    assert set(results) == {"bpb", "choice", "arithmetic", "tools"}
    assert results["choice"]["n"] == 12 and set(results["choice"]["subjects"]) == {"x", "y"}
    assert results["choice"]["chance"] == pytest.approx(1 / 3)
    assert 0 < results["bpb"]["bpb"]["value"] and results["arithmetic"]["n"] == 1
    assert results["tools"]["max_turns"] == 3 and results["arithmetic"]["sampling"]["temperature"] == 0.0
    assert "| offline MCQ (all) | 33.3% |" in capsys.readouterr().out


def test_eval_command_writes_json(tmp_path, capsys):
    make_model("tiny").save(tmp_path / "model")
    (tmp_path / "items.csv").write_text("What is 1+1?,1,2,3,4,B\nWhat is 2+2?,2,3,4,5,C\n")
    out = tmp_path / "r.json"
    assert main(["eval", "--model", str(tmp_path / "model"), "--task", "choice", "--method", "letter",
                 "--data", str(tmp_path / "items.csv"), "--out", str(out)]) == 0
    r = json.loads(out.read_text())["files"][str(tmp_path / "items.csv")]
    assert r["n"] == 2 and r["method"] == "letter" and r["chance"] == 0.25
    assert "(chance 25.0%, n=2)" in capsys.readouterr().out
    assert main(["eval", "--model", str(tmp_path / "model"), "--task", "bpb", "--data",
                 str(tmp_path / "missing.txt")]) == 2


def fake_sources():
    speech = "\n\n".join(f"{name}.\nThis is a line of verse spoken by {name.lower()} number {i}."
                         for i in range(12) for name in ("ROMEO", "JULIET", "NURSE", "FRIAR"))
    held_out = "\n".join(f"Line {i} of the held-out poem, long enough to count." for i in range(40))
    idioms = [{"word": f"成语{i}", "pinyin": "chéng yǔ", "explanation": f"第{i}个成语的意思，比较长一些。",
               "derivation": f"宋·{'苏轼' if i % 2 else '欧阳修'}《文集》：“第{i}句引文的开头，后面是第{i}句的结尾。”",
               "example": ""} for i in range(80)]
    return [("A Play", speech), ("The Poem", held_out)], idioms


def test_offline_benchmark_is_deterministic_and_well_formed():
    works, idioms = fake_sources()
    records = benchmark(works, ("The Poem",), idioms[:60], idioms[60:], "0/bench")
    assert records == benchmark(works, ("The Poem",), idioms[:60], idioms[60:], "0/bench")
    tasks = {r["task"] for r in records}
    assert tasks == {"en_next_line", "en_speaker", "zh_next_clause", "zh_idiom_meaning"}  # 2 authors < 30 quotes
    for r in records:
        assert len(r["choices"]) == len(set(r["choices"])) == 4 and 0 <= r["answer"] < 4
    line = next(r for r in records if r["task"] == "en_next_line")
    last = line["context"].rstrip("\n").split("\n")[-1]
    i = int(last.split()[1])
    assert line["choices"][line["answer"]] == f"Line {i + 1} of the held-out poem, long enough to count."
    speaker = next(r for r in records if r["task"] == "en_speaker")
    assert speaker["choices"][speaker["answer"]].strip().lower() in speaker["context"]
    meaning = next(r for r in records if r["task"] == "zh_idiom_meaning")
    n = meaning["context"].split("“成语")[1].split("”")[0]
    assert meaning["choices"][meaning["answer"]] == f"第{n}个成语的意思，比较长一些。"
    positions = [r["answer"] for r in records]
    assert len(set(positions)) == 4 and random.Random(0)             # answers are spread over the positions
