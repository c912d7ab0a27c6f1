"""The server's handlers and response builders one by one, without a live server (test_server.py drives the
whole app through the `openai` client)."""

import pytest

from minimind.infer.engine import Delta
from minimind.serve.app import (
    APIError,
    Server,
    chat_choice,
    chat_delta_chunks,
    completion_choice,
    completion_logprobs,
    default_model_name,
    reply_start,
)
from minimind.serve.protocol import ChatRequest, StreamSplitter, TokenText
from minimind.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def token_text():
    return TokenText(load_tokenizer())


def deltas(token_text, text_pieces, finish="stop"):
    tokenizer = token_text.tokenizer
    out = []
    for k, piece in enumerate(text_pieces):
        ids = tokenizer.encode(piece)
        out.append(Delta(0, piece, ids[0], finish if k == len(text_pieces) - 1 else None, -0.5, [(ids[0], -0.5)]))
    return out


def test_chat_choice_parses_reasoning_and_tool_calls(token_text):
    row = deltas(token_text, ["<think>\nadd them\n</think>\n\n", '<tool_call>\n{"name": "calculator", ',
                              '"arguments": {"expression": "2+3"}}\n</tool_call>'])
    choice = chat_choice(0, "", row, None)
    assert choice["finish_reason"] == "tool_calls" and choice["logprobs"] is None
    assert choice["message"]["reasoning_content"] == "add them"
    assert choice["message"]["content"] is None
    call = choice["message"]["tool_calls"][0]["function"]
    assert call["name"] == "calculator" and '"2+3"' in call["arguments"]
    with_lp = chat_choice(1, "", row, token_text)
    assert with_lp["index"] == 1 and [e["logprob"] for e in with_lp["logprobs"]["content"]] == [-0.5] * 3


@pytest.mark.parametrize("generated", ['{"expression": "1+1"}}\n</tool_call>',
                                       '{"expression": "1+1"}}\n</tool_call>\n</think>\n\nmore'])
def test_forced_prefix_never_leaks_into_reasoning(token_text, generated):
    """A forced tool call starts the reply with "<tool_call>" as a prefix: it is the answer, never reasoning, even
    when the model writes a stray "</think>" after it (which once turned the prefix into reasoning_content)."""
    start = reply_start('<tool_call>\n{"name": "calculator", "arguments": ')
    row = deltas(token_text, [generated])
    message = chat_choice(0, start, row, None)["message"]
    assert "reasoning_content" not in message
    assert message["tool_calls"][0]["function"]["name"] == "calculator"
    splitter, chunks = StreamSplitter(start), []
    for d in row:
        chunks += chat_delta_chunks(d, splitter, start + d.text, token_text)
    assert not any("reasoning_content" in c["delta"] for c in chunks)
    assert any("tool_calls" in c["delta"] for c in chunks)


def test_stream_chunks_end_with_the_finish_reason(token_text):
    row = deltas(token_text, ["Hello", " there"], finish="length")
    splitter, text, chunks = StreamSplitter(), "", []
    for d in row:
        text += d.text
        chunks += chat_delta_chunks(d, splitter, text, token_text)
    assert "".join(c["delta"].get("content", "") for c in chunks) == "Hello there"
    assert [c["finish_reason"] for c in chunks if c["finish_reason"]] == ["length"]
    assert all(c["logprobs"] is None or c["logprobs"]["content"][0]["logprob"] == -0.5 for c in chunks)


def test_completion_logprobs_offsets_follow_the_echo(token_text):
    row = deltas(token_text, ["ab", "cd"])
    block = completion_logprobs(row, 5, token_text)
    first = token_text(row[0].token_id)[0]
    assert block["text_offset"] == [5, 5 + len(first)] and block["token_logprobs"] == [-0.5, -0.5]
    choice = completion_choice(3, "hello", row, None)
    assert choice == {"index": 3, "text": "helloabcd", "logprobs": None, "finish_reason": "stop"}


class FakeEngine:
    tokenizer = load_tokenizer()

    class model:
        class config:
            max_position_embeddings = 64


@pytest.mark.parametrize("body, status, message", [
    (b"{", 400, "not valid JSON"),
    (b"[1]", 400, "must be a JSON object"),
    (b'{"model": "tiny"}', 422, "messages"),
    (b'{"model": "other", "messages": [{"role": "user", "content": "hi"}]}', 404, "does not exist"),
])
def test_parse_refuses_bad_bodies(body, status, message):
    server = Server(FakeEngine(), "tiny")
    with pytest.raises(APIError) as error:
        server.parse(body, ChatRequest)
    assert error.value.status == status and message in error.value.body["error"]["message"]
    ok = server.parse(b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}', ChatRequest)
    assert ok.messages[0].content == "hi"
    alias = server.parse(b'{"model": "minimind", "messages": [{"role": "user", "content": "hi"}]}', ChatRequest)
    assert alias.model == "minimind"


def test_the_default_model_id_is_the_run_name(tmp_path):
    assert default_model_name(tmp_path / "runs" / "quickstart" / "sft" / "model") == "sft"
    assert default_model_name(tmp_path / "runs" / "x" / "checkpoints" / "step-000200" / "model") == "step-000200"
    assert default_model_name(tmp_path / "my-model") == "my-model"
