"""The chat template: the Python renderer, transformers' Jinja rendering and the loss mask agree."""

import pytest

from minimind.tokenizer import load_tokenizer
from minimind.tokenizer.template import render

CALC = {"type": "function", "function": {"name": "calculator", "description": "Evaluate arithmetic",
                                         "parameters": {"type": "object",
                                                        "properties": {"expression": {"type": "string"}},
                                                        "required": ["expression"]}}}
WEATHER = {"type": "function", "function": {
    "name": "weather", "description": "天气预报",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}

CONVERSATIONS = {
    "single": dict(messages=[{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello."}]),
    "system multi-turn": dict(messages=[
        {"role": "system", "content": "You are MiniMind."},
        {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4", "reasoning_content": "dropped"},
        {"role": "user", "content": "and 3+3?"}, {"role": "assistant", "content": "6"}]),
    "chinese reasoning": dict(messages=[
        {"role": "user", "content": "学而时习之的下一句是什么？"},
        {"role": "assistant", "content": "不亦说乎。", "reasoning_content": "这是《论语》开篇。\n"}]),
    "inline think": dict(messages=[
        {"role": "user", "content": "count the r's in strawberry"},
        {"role": "assistant", "content": "<think>\ns-t-r-a-w-b-e-r-r-y\n</think>\n\nThree. 🍓"}]),
    "tools": dict(tools=[CALC, WEATHER], messages=[
        {"role": "system", "content": "Use tools when useful."},
        {"role": "user", "content": "What is 12*7, and the weather in 北京?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "12*7"}}},
            {"name": "weather", "arguments": '{"city": "北京"}'}]},
        {"role": "tool", "content": "84"}, {"role": "tool", "content": "晴，25°C"},
        {"role": "assistant", "content": "12*7 = 84; 北京晴，25°C。"}]),
    "tools no system, content with call": dict(tools=[CALC], messages=[
        {"role": "user", "content": "1/3?"},
        {"role": "assistant", "content": "Let me compute.",
         "tool_calls": [{"name": "calculator", "arguments": {"expression": "1/3"}}]},
        {"role": "tool", "content": "0.3333"}, {"role": "assistant", "content": "About 0.333."}]),
    "generation prompt": dict(messages=[{"role": "user", "content": "Hello"}], add_generation_prompt=True),
    "generation prompt thinking": dict(messages=[{"role": "user", "content": "Hello"}], add_generation_prompt=True,
                                       enable_thinking=True),
}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    directory = tmp_path_factory.mktemp("tok")
    load_tokenizer().save(directory)
    return transformers.AutoTokenizer.from_pretrained(directory)


def hf_ids(hf_tokenizer, case: dict, **extra) -> list[int]:
    kwargs = {k: v for k, v in case.items() if k != "messages"} | extra
    out = hf_tokenizer.apply_chat_template(case["messages"], tokenize=True, **kwargs)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_python_and_jinja_agree(tokenizer, hf_tokenizer, name):
    case = CONVERSATIONS[name]
    ids, mask = tokenizer.render_chat(**case)
    assert ids == hf_ids(hf_tokenizer, case)
    assert len(mask) == len(ids)
    text = hf_tokenizer.apply_chat_template(case["messages"], tokenize=False,
                                            **{k: v for k, v in case.items() if k != "messages"})
    assert tokenizer.chat_text(**case) == text


def test_open_thinking_is_accepted_by_the_jinja_template(hf_tokenizer):
    case = CONVERSATIONS["generation prompt"]
    assert hf_ids(hf_tokenizer, case, open_thinking=True) == hf_ids(hf_tokenizer, case, enable_thinking=True)
    assert hf_ids(hf_tokenizer, case, open_thinking=False) == hf_ids(hf_tokenizer, case)


def trained_text(tokenizer, case) -> list[str]:
    """The decoded runs of consecutive trained tokens."""
    ids, mask = tokenizer.render_chat(**case)
    runs, current = [], []
    for i, m in zip(ids, mask, strict=True):
        if m:
            current.append(i)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    return runs + ([tokenizer.decode(current)] if current else [])


def test_loss_mask_single_turn(tokenizer):
    assert trained_text(tokenizer, CONVERSATIONS["single"]) == ["<think>\n\n</think>\n\nHello.<|im_end|>"]


def test_loss_mask_multi_turn_drops_old_reasoning(tokenizer):
    assert trained_text(tokenizer, CONVERSATIONS["system multi-turn"]) == [
        "4<|im_end|>", "<think>\n\n</think>\n\n6<|im_end|>"]


def test_loss_mask_tools(tokenizer):
    runs = trained_text(tokenizer, CONVERSATIONS["tools"])
    assert runs == [
        '<think>\n\n</think>\n\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "12*7"}}\n</tool_call>'
        '\n<tool_call>\n{"name": "weather", "arguments": {"city": "北京"}}\n</tool_call><|im_end|>',
        "<think>\n\n</think>\n\n12*7 = 84; 北京晴，25°C。<|im_end|>"]


def test_loss_mask_reasoning(tokenizer):
    assert trained_text(tokenizer, CONVERSATIONS["chinese reasoning"]) == [
        "<think>\n这是《论语》开篇。\n</think>\n\n不亦说乎。<|im_end|>"]


def test_generation_prompt_trains_nothing(tokenizer):
    ids, mask = tokenizer.render_chat(**CONVERSATIONS["generation prompt"])
    assert sum(mask) == 0
    assert tokenizer.decode(ids).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    ids, _ = tokenizer.render_chat(**CONVERSATIONS["generation prompt thinking"])
    assert tokenizer.decode(ids).endswith("<|im_start|>assistant\n")


def test_reply_generated_with_thinking_off_renders_back_to_the_same_tokens(tokenizer):
    prompt = [{"role": "user", "content": "Hello"}]
    prompt_ids, _ = tokenizer.render_chat(prompt, add_generation_prompt=True)
    reply_ids = tokenizer.encode("Hi there!<|im_end|>")
    full, mask = tokenizer.render_chat(prompt + [{"role": "assistant", "content": "Hi there!"}])
    assert full[:len(prompt_ids) + len(reply_ids)] == prompt_ids + reply_ids


def test_tool_responses_merge_into_one_user_turn():
    text, _ = render(CONVERSATIONS["tools"]["messages"], tools=[CALC])
    assert ("<|im_start|>user\n<tool_response>\n84\n</tool_response>\n<tool_response>\n晴，25°C\n</tool_response>"
            "<|im_end|>\n") in text


def test_leading_spaces_of_an_earlier_turn_are_trained(tokenizer):
    """BPE merges the header's newline with the content's leading spaces; that token is trained."""
    case = dict(messages=[{"role": "user", "content": "code?"}, {"role": "assistant", "content": "  x = 1"},
                          {"role": "user", "content": "ok"}, {"role": "assistant", "content": "y"}])
    assert trained_text(tokenizer, case)[0].endswith("  x = 1<|im_end|>")
