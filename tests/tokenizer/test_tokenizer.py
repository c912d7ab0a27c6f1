import json

import pytest

from minimind.tokenizer import SPECIAL_TOKENS, load_tokenizer, parse_output, train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def test_special_token_ids(tokenizer):
    for i, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.backend.token_to_id(token) == i
    assert (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 1, 2)
    assert tokenizer.vocab_size == 6400
    assert tokenizer.encode("<|im_start|>user\n<think>") == [1, *tokenizer.encode("user\n"), 25]


@pytest.mark.parametrize("text", [
    "Hello, world! To be, or not to be: that is the question.",
    "学而时习之，不亦说乎？有朋自远方来，不亦乐乎？",
    "mixed 中英文 text with emoji 🍓🚀 and tabs\tand  double  spaces\n\nnew lines",
    "数字 12345 + 678 = 13023 ✓ ½ ∑ — “quotes” ‘single’",
])
def test_round_trip(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_skip_special_keeps_tool_and_think_tokens(tokenizer):
    ids = tokenizer.encode("<|im_start|><think>\nx\n</think>\n\n<tool_call>\n{}\n</tool_call><|im_end|>")
    assert tokenizer.decode(ids, skip_special_tokens=True) == "<think>\nx\n</think>\n\n<tool_call>\n{}\n</tool_call>"


def test_transformers_reads_the_files(tmp_path, tokenizer):
    transformers = pytest.importorskip("transformers")
    tokenizer.save(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert (hf.eos_token_id, hf.pad_token_id, hf.bos_token_id) == (2, 0, 1)
    text = "床前明月光 the moon 🌙 <tool_call>"
    assert hf.encode(text, add_special_tokens=False) == tokenizer.encode(text)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["added_tokens_decoder"]["20"]["special"] and not config["added_tokens_decoder"]["21"]["special"]


def test_train_small_tokenizer():
    texts = ["the cat sat on the mat", "猫坐在垫子上", "the dog sat on the log"] * 200
    tok = train_tokenizer(iter(texts), vocab_size=400)
    assert tok.backend.token_to_id("<|im_end|>") == 2 and tok.backend.token_to_id("<|buffer9|>") == 35
    assert len(tok.encode("the cat sat on the mat")) < len("the cat sat on the mat") / 2
    assert tok.decode(tok.encode("猫坐在垫子上")) == "猫坐在垫子上"


@pytest.mark.parametrize("text, content, reasoning, calls", [
    ("Hello!<|im_end|>", "Hello!", None, []),
    ("<think>\nhmm\n</think>\n\nAnswer.", "Answer.", "hmm", []),
    ("plan it\n</think>\n\nDone.", "Done.", "plan it", []),                 # the prompt opened the think block
    ("<think>\nstill thinking", "", "still thinking", []),
    ('<think>\n\n</think>\n\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "2*3"}}\n</tool_call>',
     "", None, [{"name": "calculator", "arguments": {"expression": "2*3"}}]),
    ('Let me see.\n<tool_call>\n{"name": "f", "arguments": "{\\"x\\": 1}"}\n</tool_call>', "Let me see.", None,
     [{"name": "f", "arguments": {"x": 1}}]),
    ('<tool_call>\n{"name": "f", "arguments": {broken\n</tool_call>',
     '<tool_call>\n{"name": "f", "arguments": {broken\n</tool_call>', None, []),
    ("<tool_call>\n[1, 2]\n</tool_call>", "<tool_call>\n[1, 2]\n</tool_call>", None, []),
])
def test_parse_output(text, content, reasoning, calls):
    parsed = parse_output(text)
    assert (parsed.content, parsed.reasoning_content, parsed.tool_calls) == (content, reasoning, calls)


def test_parse_output_survives_absurd_json():
    assert parse_output("<tool_call>" + "[" * 5000 + "</tool_call>").tool_calls == []
    assert parse_output('<tool_call>{"name": "f", "arguments": {"x": ' + "9" * 5000 + "}}</tool_call>").tool_calls == []
