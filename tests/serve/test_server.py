"""The OpenAI-compatible server against the official `openai` client on a live 127.0.0.1 server."""

import json
import math
import threading
import time

import openai
import pytest

from minimind.infer import Engine, SamplingParams
from minimind.tokenizer import load_tokenizer
from tests.conftest import make_model
from tests.serve.server import ScriptedModel, httpx, live_server

KEY = "sk-test"
CALC = {"type": "function", "function": {"name": "calculator", "description": "evaluate arithmetic",
                                          "parameters": {"type": "object",
                                                         "properties": {"expression": {"type": "string"}}}}}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def engine(tokenizer):
    return Engine(make_model("tiny", max_position_embeddings=256), tokenizer)


@pytest.fixture(scope="module")
def server(engine):
    with live_server(engine, api_key=KEY, max_body_bytes=64 * 1024) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0)


def test_models_and_health(client, server):
    assert [m.id for m in client.models.list()] == ["tiny"]
    health = httpx.get(server + "/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny"


def test_chat_equals_the_engine_and_reports_usage(client, engine):
    messages = [{"role": "user", "content": "hello there"}]
    reply = client.chat.completions.create(model="tiny", messages=messages, temperature=0, max_tokens=12)
    prompt = engine.chat_prompt(messages)
    expected = engine.generate([prompt], SamplingParams(max_new_tokens=12, temperature=0))[0][0]
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-") and reply.model == "tiny"
    assert choice.message.role == "assistant"
    assert choice.message.content == expected.text.strip("\n")
    assert choice.finish_reason == ("length" if expected.finish_reason == "length" else "stop")
    assert reply.usage.prompt_tokens == len(prompt)
    assert reply.usage.completion_tokens == len(expected.token_ids)
    assert reply.usage.total_tokens == len(prompt) + len(expected.token_ids)


def test_stream_equals_non_stream_and_ends_with_usage(client):
    kwargs = dict(model="tiny", messages=[{"role": "user", "content": "tell me a story"}], temperature=0.8,
                  seed=7, max_tokens=20)
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == \
        [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_raw_stream_ends_with_done(server):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True}
    with httpx.stream("POST", server + "/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"


def test_n_samples_with_a_seed_are_reproducible_and_differ(client):
    kwargs = dict(model="tiny", messages=[{"role": "user", "content": "hi"}], temperature=1.0, n=3, seed=11,
                  max_tokens=10)
    a, b = client.chat.completions.create(**kwargs), client.chat.completions.create(**kwargs)
    texts = [c.message.content for c in a.choices]
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert texts == [c.message.content for c in b.choices]
    assert len(set(texts)) > 1


def test_logprobs_are_the_engines(client, engine, tokenizer):
    messages = [{"role": "user", "content": "你好"}]
    reply = client.chat.completions.create(model="tiny", messages=messages, temperature=0, max_tokens=8,
                                           logprobs=True, top_logprobs=3)
    expected = engine.generate([engine.chat_prompt(messages)],
                               SamplingParams(max_new_tokens=8, temperature=0, logprobs=3))[0][0]
    entries = reply.choices[0].logprobs.content
    assert [bytes(e.bytes) for e in entries] == [tokenizer.token_bytes(t) for t in expected.token_ids]
    assert [e.logprob for e in entries] == pytest.approx(expected.logprobs, abs=1e-5)
    for entry, top in zip(entries, expected.top_logprobs, strict=True):
        assert [bytes(t.bytes) for t in entry.top_logprobs] == [tokenizer.token_bytes(i) for i, _ in top]
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob, abs=1e-5)   # greedy = the top token
        assert sum(math.exp(t.logprob) for t in entry.top_logprobs) <= 1 + 1e-5


def test_completions_endpoint(client, engine, tokenizer):
    reply = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=6, temperature=0,
                                      logprobs=2)
    prompt = [tokenizer.bos_id, *tokenizer.encode("Once upon a time")]
    expected = engine.generate([prompt], SamplingParams(max_new_tokens=6, temperature=0, logprobs=2))[0][0]
    choice = reply.choices[0]
    assert reply.object == "text_completion" and choice.text == expected.text
    assert choice.logprobs.token_logprobs == pytest.approx(expected.logprobs, abs=1e-5)
    assert all(len(top) == 2 for top in choice.logprobs.top_logprobs)
    assert reply.usage.prompt_tokens == len(prompt)
    streamed = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=6, temperature=0,
                                         stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == expected.text


@pytest.mark.parametrize(("call", "status", "needle"), [
    (lambda c: c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}]), 404, "nope"),
    (lambda c: c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x " * 600}]), 400,
     "context is 256 tokens"),
    (lambda c: c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], temperature=5),
     422, "temperature"),
    (lambda c: c.chat.completions.create(model="tiny", messages=[]), 422, "messages"),
    (lambda c: c.chat.completions.create(model="tiny", messages=[{"role": "wizard", "content": "x"}]), 422, "role"),
    (lambda c: c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], n=0), 422, "n"),
])
def test_errors_are_openai_error_objects(client, call, status, needle):
    with pytest.raises(openai.APIStatusError) as info:
        call(client)
    assert info.value.status_code == status
    assert needle in info.value.body["message"] and info.value.body["type"]


def test_bad_key_bad_json_and_large_body(server):
    auth = {"Authorization": f"Bearer {KEY}"}
    r = httpx.post(server + "/v1/chat/completions", json={"model": "tiny"}, headers={"Authorization": "Bearer no"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = httpx.post(server + "/v1/chat/completions", content=b"{not json", headers=auth)
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    big = {"model": "tiny", "messages": [{"role": "user", "content": "x" * 100_000}]}
    r = httpx.post(server + "/v1/chat/completions", json=big, headers=auth)
    assert r.status_code == 413 and "bytes" in r.json()["error"]["message"]
    assert httpx.get(server + "/v1/models").status_code == 401


def test_concurrent_requests_are_batched_and_equal_to_alone(client, server, engine):
    """Eight greedy requests at once: each gets what it gets alone, and they share decode steps."""
    prompts = [f"question number {i}" for i in range(8)]
    alone = [engine.chat([{"role": "user", "content": p}], SamplingParams(max_new_tokens=64, temperature=0))[0][0]
             .text for p in prompts]
    seen_rows, results, stop = [], [None] * 8, threading.Event()

    def watch():
        while not stop.is_set():
            seen_rows.append(httpx.get(server + "/health").json()["rows_decoding"])
            time.sleep(0.005)

    def ask(i):
        r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": prompts[i]}],
                                           temperature=0, max_tokens=64)
        results[i] = r.choices[0].message.content

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    assert results == [a.strip("\n") for a in alone]
    assert max(seen_rows) > 1


def test_a_disconnected_stream_is_cancelled(server, engine):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "go on forever"}], "stream": True,
            "max_tokens": 200}
    with httpx.stream("POST", server + "/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}) as r:
        for _ in zip(range(3), r.iter_lines(), strict=False):
            pass
    deadline = time.time() + 10
    while httpx.get(server + "/health").json()["rows_decoding"] and time.time() < deadline:
        time.sleep(0.05)
    assert httpx.get(server + "/health").json()["rows_decoding"] == 0


# ---- reasoning and tools, with a scripted model ---------------------------------------------------------------


def scripted_reply(tokenizer):
    def script(prompt_ids):
        prompt = tokenizer.decode(prompt_ids)
        if "<tool_response>" in prompt:
            return "<think>\nThe tool said 5.\n</think>\n\n2 + 3 = 5."
        if "<tools>" in prompt:
            return '<tool_call>\n{"name": "calculator", "arguments": {"expression": "2+3"}}\n</tool_call>'
        return "<think>\nAdd the numbers.\n</think>\n\nThe sum is 5."
    return script


@pytest.fixture(scope="module")
def scripted(tokenizer):
    model = ScriptedModel(make_model("tiny", max_position_embeddings=1024), tokenizer, scripted_reply(tokenizer))
    with live_server(Engine(model, tokenizer), name="scripted") as url:
        yield openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def test_reasoning_is_split_from_the_answer(scripted):
    kwargs = dict(model="scripted", messages=[{"role": "user", "content": "2+3?"}],
                  extra_body={"chat_template_kwargs": {"enable_thinking": True}})
    message = scripted.chat.completions.create(**kwargs).choices[0].message
    assert message.content == "The sum is 5."
    assert message.model_extra["reasoning_content"] == "Add the numbers."
    chunks = list(scripted.chat.completions.create(**kwargs, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(d.content or "" for d in deltas) == "The sum is 5."
    assert "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas) == "Add the numbers."


@pytest.mark.parametrize("stream", [False, True])
def test_tool_call_round_trip(scripted, stream):
    messages = [{"role": "user", "content": "what is 2+3?"}]
    first = scripted.chat.completions.create(model="scripted", messages=messages, tools=[CALC], stream=stream)
    if stream:
        chunks = list(first)
        calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert [tc.index for tc in calls] == [0]
        call_id, name, arguments = calls[0].id, calls[0].function.name, calls[0].function.arguments
    else:
        choice = first.choices[0]
        finish = [choice.finish_reason]
        assert choice.message.content is None
        (call,) = choice.message.tool_calls
        call_id, name, arguments = call.id, call.function.name, call.function.arguments
    assert finish == ["tool_calls"] and name == "calculator"
    assert json.loads(arguments) == {"expression": "2+3"}
    messages += [{"role": "assistant", "content": None, "tool_calls": [
        {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "5"}]
    second = scripted.chat.completions.create(model="scripted", messages=messages, tools=[CALC])
    assert second.choices[0].message.content == "2 + 3 = 5."
    assert second.choices[0].finish_reason == "stop"


def test_tool_choice_none_hides_the_tools(scripted):
    reply = scripted.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "2+3?"}],
                                             tools=[CALC], tool_choice="none")
    assert reply.choices[0].message.tool_calls is None
    assert reply.choices[0].message.content == "The sum is 5." and reply.choices[0].finish_reason == "stop"


def test_cors_is_off_by_default_and_configurable(engine, server):
    preflight = {"Origin": "http://example.test", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in httpx.options(server + "/v1/chat/completions",
                                                              headers=preflight).headers
    with live_server(engine, cors_origins=["http://example.test"]) as url:
        r = httpx.options(url + "/v1/chat/completions", headers=preflight)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://example.test"


class BrokenModel(type(make_model("tiny"))):
    def decode_step(self, *args):
        raise RuntimeError("the device fell over")


def test_a_failing_model_gives_500_or_an_error_event_and_the_server_lives_on(tokenizer):
    broken = BrokenModel(make_model("tiny").config)
    body = {"model": "broken", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    with live_server(Engine(broken, tokenizer), name="broken") as url:
        r = httpx.post(url + "/v1/chat/completions", json=body)
        assert r.status_code == 500 and "fell over" in r.json()["error"]["message"]
        with httpx.stream("POST", url + "/v1/chat/completions", json=body | {"stream": True}) as r:
            events = [line for line in r.iter_lines() if line]
        assert "fell over" in json.loads(events[-2].removeprefix("data: "))["error"]["message"]
        assert events[-1] == "data: [DONE]"
        assert httpx.get(url + "/health").json()["status"] == "ok"
