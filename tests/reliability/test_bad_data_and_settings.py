"""Bad data and settings that used to train or evaluate on nothing without a word: rows without targets, lost
targets, a warmup longer than the run, a benchmark split without answers, RL records without answers, the
reference's agentic records (docs/reliability.md)."""

import json

import pytest

from minimind.errors import MiniMindError
from minimind.eval.choice import read_items
from minimind.train.trainer import train
from tests.train.test_trainer import config


def test_a_warmup_longer_than_the_run_is_announced(data, tmp_path, capfd):
    train(config(data, tmp_path / "run", max_steps=3, optim={"lr": 1e-3, "warmup_steps": 10}))
    err = capfd.readouterr().err
    assert "optim.warmup_steps (10) ≥ the run's 3 steps" in err and "ends at 0.0003" in err
    train(config(data, tmp_path / "ok", max_steps=3, optim={"lr": 1e-3, "warmup_steps": 1}))
    assert "warmup" not in capfd.readouterr().err


def test_truncation_is_announced_and_rows_without_targets_are_refused(data, tmp_path, capfd):
    """SFT rows shorter than the conversations: the run says how many targets it loses; rows so short that no
    answer token is left (the assistant turn starts past them) refuse to train instead of logging loss 0."""
    sft = {"train": [str(data / "sft.jsonl")], "val": [], "seq_len": 24, "prepared": str(data / "prepared")}
    train(config(data, tmp_path / "cut", stage="sft", data=sft, max_steps=1))
    err = capfd.readouterr().err
    assert "documents do not fit whole in rows of data.seq_len 24" in err and "target tokens" in err
    with pytest.raises(MiniMindError, match="hold no training targets"):
        train(config(data, tmp_path / "none", stage="sft", data=sft | {"seq_len": 8}, max_steps=1))


def test_ceval_test_split_without_answers_is_refused(tmp_path):
    """C-Eval's test split (id,question,A,B,C,D) was once read as headerless MMLU and scored 0%."""
    path = tmp_path / "computer_network_test.csv"
    path.write_text("id,question,A,B,C,D\n0,TCP属于哪一层？,应用层,传输层,网络层,链路层\n", encoding="utf-8")
    with pytest.raises(MiniMindError, match=r"no answer column: a test split without answers .*computer_network_val"):
        read_items(path)


def test_records_without_answers_are_refused_for_an_answer_based_reward():
    """The reference's rlaif.jsonl: prompts whose last assistant turn is the placeholder "无", no answer."""
    from minimind.errors import MiniMindError
    from minimind.train.grpo import check_answers

    rlaif = [{"messages": [{"role": "user", "content": "讲个故事"}], "tools": None, "answer": None}] * 3
    with pytest.raises(MiniMindError, match=r"rlaif.jsonl: 3 of 3 records carry no 'answer'.*reward_model"):
        check_answers(rlaif, {"accuracy": 1.0, "length": 0.1}, ["rlaif.jsonl"])
    check_answers(rlaif, {"reward_model": 1.0}, ["rlaif.jsonl"])                    # a reward model needs none
    check_answers([{"answer": "3"}, {"answer": None, "gt": ["Paris"]}], {"accuracy": 1.0}, ["x.jsonl"])


def test_gt_items_are_kept_and_scored_as_the_reference_does(tmp_path):
    from minimind.data.formats import read_records
    from minimind.rl.rewards import accuracy

    record = {"conversations": [{"role": "system", "content": "", "tools": "[]"},
                                {"role": "user", "content": "weather in Paris?"},
                                {"role": "assistant", "content": "无"}], "gt": ["Paris", 21]}
    (tmp_path / "agent.jsonl").write_text(json.dumps(record) + "\n")
    (parsed,) = read_records(tmp_path / "agent.jsonl", "rl")
    assert parsed["gt"] == ["Paris", "21"] and parsed["answer"] is None
    texts = ['<tool_call>{"name": "w"}</tool_call> It is 21.0 degrees in paris.', "It is sunny.", "paris"]
    assert accuracy(texts, [parsed] * 3) == [1.0, 0.0, 0.5]


def fake_weather(city: str) -> str:
    """An implementation of the reference's weather tool, named by module:function in rl.tool_functions."""
    return f"{city}: sunny, 21 °C"


WEATHER = {"type": "function", "function": {"name": "get_current_weather", "description": "the weather in a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}


def test_a_records_own_tools_are_offered_resolved_by_name_or_refused():
    """The reference's agentic records carry their own tool schemas: the prompt offers those (not rl.tools), a
    call may use only those, each is implemented by a built-in of that name or by rl.tool_functions, and a tool
    with no implementation is refused before any rollout."""
    from minimind.errors import MiniMindError
    from minimind.rl.config import RLConfig
    from minimind.rl.rollouts import offered
    from minimind.rl.tools import TOOLS, resolve_record_tools, run_tool

    record = {"messages": [{"role": "user", "content": "weather in Paris?"}], "tools": [WEATHER], "gt": ["Paris"]}
    with pytest.raises(MiniMindError, match=r"offer the tool 'get_current_weather'.*rl.tool_functions"):
        resolve_record_tools([record], {})
    try:
        resolve_record_tools([record], {"get_current_weather": f"{__name__}:fake_weather"})
        options = RLConfig(agent=True, tools=["calculator"])
        schemas, names = offered(record, options)
        assert schemas == [WEATHER] and names == ["get_current_weather"]
        assert offered({"messages": [], "tools": None}, options)[1] == ["calculator"]
        call = {"name": "get_current_weather", "arguments": {"city": "Paris"}}
        assert run_tool(call, names) == "Paris: sunny, 21 °C"
        assert run_tool({"name": "calculator", "arguments": {"expression": "1+1"}}, names).startswith(
            "error: unknown tool")
        with pytest.raises(MiniMindError, match="cannot import 'nothing'"):
            resolve_record_tools([record], {"get_current_weather": f"{__name__}:nothing"})
    finally:
        TOOLS.pop("get_current_weather", None)
