import json

import pytest

from minimind.errors import MiniMindError
from minimind.eval.choice import Item, evaluate_choice, prompt, read_items


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def test_ceval_csv(tmp_path):
    path = tmp_path / "computer_network_val.csv"
    path.write_text("id,question,A,B,C,D,answer,explanation\n"
                    "0,TCP属于哪一层？,应用层,传输层,网络层,链路层,B,因为\n"
                    '1,"带,逗号的题",甲,乙,丙,丁,D,\n', encoding="utf-8")
    items = read_items(path)
    assert [i.answer for i in items] == [1, 3] and items[0].choices == ["应用层", "传输层", "网络层", "链路层"]
    assert items[1].question == "带,逗号的题" and items[0].subject == "computer_network" and items[0].chinese



def test_cmmlu_csv(tmp_path):
    path = tmp_path / "anatomy.csv"
    path.write_text(",Question,A,B,C,D,Answer\n0,人体最大的器官是,心脏,皮肤,肝脏,肺,B\n", encoding="utf-8")
    (item,) = read_items(path)
    assert item.question == "人体最大的器官是" and item.answer == 1 and item.subject == "anatomy"


def test_mmlu_csv_without_header(tmp_path):
    path = tmp_path / "astronomy_test.csv"
    path.write_text("What is the closest star?,Sirius,The Sun,Vega,Proxima,B\n\"Two, words?\",a,b,c,d,D\n")
    items = read_items(path)
    assert [i.answer for i in items] == [1, 3] and items[0].subject == "astronomy"
    assert items[1].question == "Two, words?" and items[1].choices == ["a", "b", "c", "d"]


def test_arc_and_openbookqa_jsonl(tmp_path):
    arc = write_jsonl(tmp_path / "ARC-Easy-Test.jsonl", [
        {"id": "x", "question": {"stem": "Which is a gas?", "choices": [
            {"text": "ice", "label": "A"}, {"text": "steam", "label": "B"}, {"text": "rock", "label": "C"}]},
         "answerKey": "B"},
        {"id": "y", "question": {"stem": "Numbered labels", "choices": [
            {"text": "one", "label": "1"}, {"text": "two", "label": "2"}, {"text": "three", "label": "3"},
            {"text": "four", "label": "4"}]}, "answerKey": "4"}])
    assert [(i.answer, len(i.choices)) for i in read_items(arc)] == [(1, 3), (3, 4)]
    hf = write_jsonl(tmp_path / "obqa.jsonl", [
        {"id": "z", "question_stem": "The sun is", "choices": {"text": ["cold", "a star"], "label": ["A", "B"]},
         "answerKey": "B"},
        {"id": "w", "question": "HF ARC", "choices": {"text": ["p", "q"], "label": ["A", "B"]}, "answerKey": "A"}])
    assert [(i.question, i.answer) for i in read_items(hf)] == [("The sun is", 1), ("HF ARC", 0)]


def test_mmlu_hf_and_our_layout(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [
        {"question": "2+2?", "choices": ["3", "4"], "answer": 1, "subject": "math"},
        {"context": "Once upon a", "choices": [" time", " cat"], "answer": 0, "task": "story"},
        {"question": "C-Eval row as JSON", "A": "a", "B": "b", "C": "c", "D": "d", "answer": "C"}])
    items = read_items(path)
    assert [(i.subject, i.answer) for i in items] == [("math", 1), ("story", 0), ("mixed", 2)]
    assert items[1].context == "Once upon a"


@pytest.mark.parametrize("content, message", [
    ('{"question": "q", "choices": ["a", "b"], "answer": 5}\n', r"bad.jsonl:1: answer index 5 out of range"),
    ('{"question": "q", "choices": ["a", "b"], "answer": 0}\n{"foo": 1}\n', r"bad.jsonl:2: unrecognised"),
    ('{"question": {"stem": "q", "choices": [{"text": "a", "label": "A"}]}, "answerKey": "Z"}\n',
     r"bad.jsonl:1: answer 'Z' is not one"),
    ('not json\n', r"bad.jsonl:1: not JSON"),
    ('{"question": "q", "choices": ["only one"], "answer": 0}\n', r"bad.jsonl:1: expected at least two options"),
])
def test_bad_records_name_file_and_line(tmp_path, content, message):
    (tmp_path / "bad.jsonl").write_text(content)
    with pytest.raises(MiniMindError, match=message):
        read_items(tmp_path / "bad.jsonl")


def test_bad_csv_row(tmp_path):
    (tmp_path / "x_val.csv").write_text("id,question,A,B,C,D,answer\n0,q,a,b,c,d,A\n1,q,a,b\n")
    with pytest.raises(MiniMindError, match=r"x_val.csv:3: expected 7 columns"):
        read_items(tmp_path / "x_val.csv")


def test_prompts():
    en = Item("What is 2+2?", ["3", "4"], 1)
    assert prompt(en, "cloze") == ("Question: What is 2+2?\nAnswer:", [" 3", " 4"])
    assert prompt(en, "letter") == ("What is 2+2?\nA. 3\nB. 4\nAnswer:", [" A", " B"])
    zh = Item("一加一等于几？", ["二", "三"], 0)
    assert prompt(zh, "cloze") == ("一加一等于几？\n答案：", ["二", "三"])
    assert prompt(zh, "letter") == ("一加一等于几？\nA. 二\nB. 三\n答案：", ["A", "B"])
    ours = Item("", ["time", " cat"], 0, context="Once upon a ")
    assert prompt(ours, "cloze") == ("Once upon a ", ["time", " cat"])


class ForcedScorer:
    """Scores Σ log p as 0 for the continuation named `favourite(context)`, -5 per byte otherwise."""

    def __init__(self, favourite):
        self.favourite, self.requests = favourite, []

    def loglikelihood(self, requests):
        self.requests += requests
        return [(0.0 if cont == self.favourite(ctx) else -5.0 * len(cont), False) for ctx, cont in requests]


ITEMS = [Item(f"Q{i}?", [f"opt{i}a", f"opt{i}b", f"opt{i}c", f"opt{i}d"], i % 4, subject=f"s{i % 2}")
         for i in range(8)]


def test_the_forced_option_wins():
    right = ForcedScorer(lambda ctx: next(f" {it.choices[it.answer]}" for it in ITEMS if ctx.endswith(
        f"{it.question}\nAnswer:")))
    r = evaluate_choice(right, ITEMS)
    assert r["acc"]["value"] == 1.0 and r["acc_norm"]["value"] == 1.0 and r["chance"] == 0.25
    assert set(r["subjects"]) == {"s0", "s1"} and r["subjects"]["s0"]["acc"]["n"] == 4
    wrong = ForcedScorer(lambda ctx: next(f" {it.choices[(it.answer + 1) % 4]}" for it in ITEMS if ctx.endswith(
        f"{it.question}\nAnswer:")))
    assert evaluate_choice(wrong, ITEMS)["acc"]["value"] == 0.0
    letters = ForcedScorer(lambda ctx: " " + "ABCD"[next(it.answer for it in ITEMS if f"{it.question}\n" in ctx)])
    r = evaluate_choice(letters, ITEMS, method="letter")
    assert r["acc"]["value"] == 1.0 and "acc_norm" not in r


def test_acc_norm_divides_by_option_bytes():
    item = Item("q", ["short", "a much longer option"], 1)

    class Scorer:
        def loglikelihood(self, requests):           # the long option: -0.5 per byte (-10.5); the short: -4
            return [(-4.0 if cont == " short" else -0.5 * len(cont.encode()), False) for _, cont in requests]

    r = evaluate_choice(Scorer(), [item])
    assert r["acc"]["value"] == 0.0 and r["acc_norm"]["value"] == 1.0


def test_few_shot_prompts_use_other_items_deterministically():
    scorer = ForcedScorer(lambda ctx: None)
    evaluate_choice(scorer, ITEMS, shots=2)
    first = scorer.requests[0][0]
    assert first.count("Question: ") == 3 and first.endswith("Question: Q0?\nAnswer:")
    shots = first.split("\n\n")[:2]
    assert all(s.startswith("Question: Q") and "Q0?" not in s for s in shots)
    assert all(s.endswith(f" opt{s[11]}" + "abcd"[int(s[11]) % 4]) for s in shots)   # each shot shows its answer
    again = ForcedScorer(lambda ctx: None)
    evaluate_choice(again, ITEMS, shots=2)
    assert again.requests == scorer.requests
    with pytest.raises(MiniMindError, match="8-shot"):
        evaluate_choice(scorer, ITEMS, shots=8)
