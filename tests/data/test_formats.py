import json
import re

import pytest

from minimind.data.formats import ReadReport, RecordError, read_records


def write(tmp_path, rows, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows))
    return path


def test_reference_sft_format_is_normalised(tmp_path):
    tools = [{"type": "function", "function": {"name": "calc", "parameters": {}}}]
    path = write(tmp_path, [{"conversations": [
        {"role": "system", "content": "sys", "tools": json.dumps(tools)},
        {"role": "user", "content": "1+1"},
        {"role": "assistant", "content": "", "tool_calls": json.dumps(
            [{"type": "function", "function": {"name": "calc", "arguments": '{"expression": "1+1"}'}}])},
        {"role": "tool", "content": "2"},
        {"role": "assistant", "content": "2", "reasoning_content": "easy"}]}])
    (record,) = read_records(path, "sft")
    assert record["tools"] == tools
    assert record["messages"][2]["tool_calls"] == [{"name": "calc", "arguments": {"expression": "1+1"}}]
    assert record["messages"][4]["reasoning_content"] == "easy"


@pytest.mark.parametrize("stage, row, message", [
    ("pretrain", {"txt": "x"}, ":1: text: missing"),
    ("pretrain", {"text": 3}, ":1: text: must be a string, got int"),
    ("pretrain", "{not json", ":1: (line): not valid JSON"),
    ("sft", {"conversations": [{"role": "bot", "content": "x"}]}, ":1: conversations[0].role: must be one of"),
    ("sft", {"conversations": [{"role": "user", "content": "x"}]}, ":1: conversations: has no assistant message"),
    ("sft", {"conversations": [{"role": "user"}, {"role": "assistant", "content": "y"}]},
     ":1: conversations[0].content: missing"),
    ("sft", {"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "",
                                                                 "tool_calls": '[{"name": "f", "arguments": "{x"}]'}]},
     ":1: conversations[1].tool_calls[0].arguments: not valid JSON"),
    ("dpo", {"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
             "rejected": [{"role": "user", "content": "q"}]}, ":1: rejected[0].role: the last message must be"),
    ("rl", {"conversations": [{"role": "user", "content": "q"}], "answer": [1]}, ":1: answer: must be a string"),
])
def test_errors_name_file_line_and_field(tmp_path, stage, row, message):
    path = write(tmp_path, [row])
    with pytest.raises(RecordError) as e:
        list(read_records(path, stage))
    assert str(e.value).startswith(str(path)) and message in str(e.value)


def test_skip_bad_lines_counts(tmp_path):
    path = write(tmp_path, [{"text": "a"}, {"text": ""}, "oops", {"text": "b"}, ""])
    report = ReadReport()
    assert [r["text"] for r in read_records(path, "pretrain", skip_bad=True, report=report)] == ["a", "b"]
    assert (report.records, report.skipped) == (2, 2)
    assert report.first_errors[0].endswith(":2: text: is empty") and ":3: (line)" in report.first_errors[1]


def test_rl_drops_the_placeholder_answer(tmp_path):
    path = write(tmp_path, [{"conversations": [{"role": "user", "content": "1+2?"},
                                               {"role": "assistant", "content": "无"}], "answer": 3}])
    (record,) = read_records(path, "rl")
    assert record["messages"] == [{"role": "user", "content": "1+2?"}] and record["answer"] == "3"


@pytest.mark.parametrize("line, message", [
    (b'{"text": "\xff"}', "(line): not UTF-8"),
    (b'{"text": "\\ud800"}', "(line): contains an unpaired surrogate"),
    (b'{"text": ' + b"[" * 5000 + b"]" * 5000 + b"}", "(line): not usable JSON"),
    (b'{"text": "a", "n": ' + b"9" * 5000 + b"}", "(line): not usable JSON"),
])
def test_hostile_lines_are_record_errors(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(line + b"\n")
    with pytest.raises(RecordError, match=re.escape(message)):
        list(read_records(path, "pretrain"))
    assert list(read_records(path, "pretrain", skip_bad=True)) == []


@pytest.mark.parametrize("stage, row, message", [
    ("rl", {"conversations": [{"role": "user", "content": "q"}], "answer": True}, "answer: must be a string"),
    ("sft", {"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
             "tools": [1]}, "tools[0]: must be an object"),
])
def test_more_field_errors(tmp_path, stage, row, message):
    path = write(tmp_path, [row])
    with pytest.raises(RecordError, match=re.escape(message)):
        list(read_records(path, stage))
