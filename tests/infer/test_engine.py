"""The engine against naive decoding, itself row by row, independent runs, and its stop/stream contracts."""

import math

import pytest
import torch

from minimind.config import parse_rope_scaling
from minimind.errors import MiniMindError
from minimind.infer import Engine, SamplingParams
from minimind.infer.engine import Request, Row
from minimind.infer.sampling import apply_penalties, filter_logits
from minimind.tokenizer import load_tokenizer
from tests.conftest import make_model

PROMPTS = [[1, 400, 2000, 33, 87, 5], [1, 77], [1, 900, 12, 3000]]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(params=["tiny", "tiny-moe"])
def engine(request, tokenizer):
    return Engine(make_model(request.param), tokenizer)


def naive_greedy(model, prompt, n):
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(n):
            ids = torch.cat([ids, model(ids).logits[:, -1:].argmax(-1)], dim=1)
    return ids[0, len(prompt):].tolist()


def test_greedy_equals_naive_full_forward_decoding(engine):
    params = SamplingParams(max_new_tokens=12, temperature=0, ignore_eos=True)
    out = engine.generate(PROMPTS, params)
    for prompt, (completion,) in zip(PROMPTS, out, strict=True):
        assert completion.token_ids == naive_greedy(engine.model, prompt, 12)
        assert completion.finish_reason == "length"


def test_batch_equals_rows_alone_when_sampling(engine):
    params = SamplingParams(max_new_tokens=10, temperature=1.0, top_k=50, top_p=0.9, seed=3, ignore_eos=True,
                            repetition_penalty=1.2, frequency_penalty=0.5)
    batch = engine.generate(PROMPTS, params)
    for prompt, (completion,) in zip(PROMPTS, batch, strict=True):
        assert completion.token_ids == engine.generate([prompt], params)[0][0].token_ids


def test_shared_prefill_samples_equal_independent_runs(engine):
    params = SamplingParams(max_new_tokens=8, temperature=1.0, seed=11, n=3, ignore_eos=True)
    samples = engine.generate([PROMPTS[0]], params)[0]
    assert len({tuple(s.token_ids) for s in samples}) > 1                      # they differ
    for j, s in enumerate(samples):
        alone = SamplingParams(max_new_tokens=8, temperature=1.0, seed=11 + j, ignore_eos=True)
        assert s.token_ids == engine.generate([PROMPTS[0]], alone)[0][0].token_ids


def test_common_prefix_prefilled_once_equals_rows_alone(engine, monkeypatch):
    """Prompts sharing a long prefix (a system prompt) prefill it once; tails of different lengths are padded
    after it. Greedy and penalised sampling match each prompt run alone (which has nothing to share)."""
    prefix = [1] + [(7 * i) % 3000 + 10 for i in range(40)]
    prompts = [prefix + [400, 2000, 33], prefix + [77], prefix + [900, 12, 3000, 5, 6]]
    forward_shapes = []
    forward = engine.model.forward
    monkeypatch.setattr(engine.model, "forward",
                        lambda ids, **kw: forward_shapes.append(ids.shape) or forward(ids, **kw))
    for params in (SamplingParams(max_new_tokens=10, temperature=0, ignore_eos=True),
                   SamplingParams(max_new_tokens=10, temperature=1.0, seed=5, ignore_eos=True, presence_penalty=1.0)):
        forward_shapes.clear()
        batch = engine.generate(prompts, params)
        assert forward_shapes[:2] == [(1, 41), (3, 5)]                       # the prefix once, then the padded tails
        for prompt, (completion,) in zip(prompts, batch, strict=True):
            assert completion.token_ids == engine.generate([prompt], params)[0][0].token_ids


def test_stop_token_cuts_exactly(engine):
    free = engine.generate([PROMPTS[0]], SamplingParams(max_new_tokens=12, temperature=0, ignore_eos=True))[0][0]
    stop = free.token_ids[4]
    first = free.token_ids.index(stop)
    out = engine.generate([PROMPTS[0]], SamplingParams(max_new_tokens=12, temperature=0, ignore_eos=True,
                                                       stop_token_ids=[stop]))[0][0]
    assert out.token_ids == free.token_ids[:first + 1] and out.finish_reason == "stop"
    assert out.text == engine.tokenizer.decode(free.token_ids[:first], skip_special_tokens=True)


def test_stop_string_cuts_exactly_and_stream_never_shows_it(engine):
    free = engine.generate([PROMPTS[1]], SamplingParams(max_new_tokens=16, temperature=0, ignore_eos=True))[0][0]
    text = free.text
    assert len(text) > 6
    stop = text[3:6]
    params = SamplingParams(max_new_tokens=16, temperature=0, ignore_eos=True, stop=[stop])
    out = engine.generate([PROMPTS[1]], params)[0][0]
    assert out.text == text[:text.find(stop)] and out.finish_reason == "stop"
    streamed = "".join(d.text for (d,) in engine.stream([PROMPTS[1]], params))
    assert streamed == out.text


def test_stream_equals_final_text(engine):
    params = SamplingParams(max_new_tokens=20, temperature=1.0, seed=5, ignore_eos=True)
    final = engine.generate([PROMPTS[2]], params)[0][0]
    assert "".join(d.text for (d,) in engine.stream([PROMPTS[2]], params)) == final.text


@pytest.mark.parametrize("text", ["你好，世界！学而时习之", "emoji 🍓🚀👩‍👩‍👧 and 中文 mixed", "½ ∑ “quotes” 😀"])
def test_incremental_detokenisation_never_emits_half_a_character(tokenizer, text):
    ids = tokenizer.encode(text)
    assert len(ids) > len(text) / 3                               # byte-level pieces: characters are split
    row = Row(tokenizer, Request(SamplingParams(), set(), 0), 0, max_new_tokens=len(ids), generator=None)
    deltas = [row.push(t, None, None) for t in ids]
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == text and row.out.finish_reason == "length"


def test_logprobs_match_the_model(engine):
    params = SamplingParams(max_new_tokens=5, temperature=0, ignore_eos=True, logprobs=3)
    out = engine.generate([PROMPTS[0]], params)[0][0]
    ids = torch.tensor([PROMPTS[0] + out.token_ids])
    with torch.no_grad():
        logp = engine.model(ids).logits[0].log_softmax(-1)
    for t, (token, lp, top) in enumerate(zip(out.token_ids, out.logprobs, out.top_logprobs, strict=True)):
        expected = logp[len(PROMPTS[0]) - 1 + t]
        assert math.isclose(lp, expected[token].item(), abs_tol=1e-4)
        assert [i for i, _ in top] == expected.topk(3).indices.tolist() and top[0][0] == token


def test_penalties_and_filters():
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0]])
    seen = torch.tensor([[True, True, False, False]])
    counts = torch.tensor([[0.0, 2.0, 0.0, 0.0]])
    out = apply_penalties(logits, seen, counts, SamplingParams(repetition_penalty=2.0, presence_penalty=0.5,
                                                               frequency_penalty=0.25))
    torch.testing.assert_close(out, torch.tensor([[1.0, -2.0 - 0.5 - 0.5, 0.5, 0.0]]))
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = lambda **kw: torch.isfinite(filter_logits(probs, SamplingParams(**kw))).tolist()[0]   # noqa: E731
    assert kept(top_k=2) == [True, True, False, False]
    assert kept(top_p=0.7) == [True, True, False, False]
    assert kept(top_p=0.81) == [True, True, True, False]
    assert kept(min_p=0.35) == [True, True, False, False]


@pytest.mark.parametrize("prompts, params, message", [
    ([[]], SamplingParams(), "empty prompt"),
    ([[1] * 2048], SamplingParams(), "the model's context is 2048"),
    ([[1]], SamplingParams(temperature=-1), "temperature must be ≥ 0"),
    ([[1]], SamplingParams(top_p=0), "top_p must be in"),
    ([[99999]], SamplingParams(), "prompt token ids must be in"),
])
def test_bad_input_is_a_clear_error(tokenizer, prompts, params, message):
    with pytest.raises(MiniMindError, match=message):
        Engine(make_model(), tokenizer).generate(prompts, params)


def test_yarn_switch():
    block = parse_rope_scaling("yarn:16", 32768)
    assert block["factor"] == 16 and block["original_max_position_embeddings"] == 2048
    assert parse_rope_scaling("yarn:4:512", 32768)["original_max_position_embeddings"] == 512
    with pytest.raises(MiniMindError, match="expected yarn:FACTOR"):
        parse_rope_scaling("linear:2", 32768)


def test_chat_parses_the_reply(tokenizer):
    engine = Engine(make_model(), tokenizer)
    (completion, parsed), = engine.chat([{"role": "user", "content": "hi"}], SamplingParams(max_new_tokens=6,
                                                                                           temperature=0))
    assert parsed.content == completion.text.strip("\n") or parsed.tool_calls


def test_unseeded_identical_prompts_sample_differently(tokenizer):
    engine = Engine(make_model(), tokenizer)
    out = engine.generate([PROMPTS[0]] * 3, SamplingParams(max_new_tokens=8, temperature=1.0, ignore_eos=True))
    assert len({tuple(c.token_ids) for (c,) in out}) > 1


def test_each_row_gets_its_own_context_budget(tokenizer):
    engine = Engine(make_model(), tokenizer)        # context 2048
    params = SamplingParams(max_new_tokens=20, temperature=0, ignore_eos=True)
    short, long = engine.generate([[1, 2, 3], [1] * 2040], params)
    assert len(short[0].token_ids) == 20 and len(long[0].token_ids) == 8
    assert short[0].token_ids == engine.generate([[1, 2, 3]], params)[0][0].token_ids


@pytest.mark.parametrize("params, message", [
    (SamplingParams(stop=[""]), "stop strings must be non-empty"),
    (SamplingParams(temperature=float("inf")), "must be finite"),
    (SamplingParams(seed=2**70), "seed must be in"),
])
def test_more_sampling_checks(params, message):
    with pytest.raises(MiniMindError, match=message):
        params.validate()


@pytest.mark.parametrize("name", ["tiny", "tiny-moe"])
def test_static_decode_step_equals_the_cached_forward(name):
    """decode_step over the whole preallocated cache (write_at, key mask) = the forward over the sliced cache,
    with a left-padded row whose rotary positions skip its padding."""
    from minimind.model.cache import KVCache

    model = make_model(name)
    ids = torch.tensor([[0, 0, 5, 9, 400], [1, 7, 33, 2, 80]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    nxt = torch.tensor([[11], [12]])
    with torch.no_grad():
        full = model(torch.cat([ids, nxt], 1), attention_mask=torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1))
        cache = KVCache(model.config, 2, 16)
        model(ids, attention_mask=mask, cache=cache)
        cache.write_at, cache.length = torch.tensor([5, 5]), 16
        key_mask = torch.cat([mask, torch.ones(2, 11, dtype=torch.long)], 1).bool()
        logits = model.decode_step(nxt, torch.tensor([[3], [5]]), key_mask, cache)
    torch.testing.assert_close(logits, full.logits[:, -1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["tiny", "tiny-moe"])
def test_compiled_decoding_equals_eager(tokenizer, name):
    """The compiled one-sequence step (multiply-reduce projections, and over the chosen experts' rows in an MoE
    layer) decodes what the eager loop decodes."""
    model = make_model(name)
    params = SamplingParams(max_new_tokens=24, temperature=0, ignore_eos=True, logprobs=0)
    eager = Engine(model, tokenizer).generate([PROMPTS[0]], params)[0][0]
    compiled = Engine(model, tokenizer, compile=True).generate([PROMPTS[0]], params)[0][0]
    assert compiled.token_ids == eager.token_ids
    assert compiled.logprobs == pytest.approx(eager.logprobs, abs=1e-4)


def test_compiled_decode_step_writes_the_cache_in_place():
    """The compiled step writes each layer's new key and value into the cache itself: the generated code
    allocates no buffer of a layer's cache size (a per-layer copy, every step, grows with the context)."""
    from torch._inductor.utils import run_and_get_code

    from minimind.model.cache import KVCache

    model = make_model("tiny")
    c, capacity = model.config, 64
    cache = KVCache(c, 1, capacity)
    with torch.no_grad():
        model(torch.tensor([[5, 9, 400]]), cache=cache)
        cache.write_at, cache.length = torch.tensor([3]), capacity
        step = torch.compile(model.decode_step, dynamic=False)
        _, (code, *_) = run_and_get_code(step, torch.tensor([[11]]), torch.tensor([[3]]),
                                         torch.ones(1, capacity, dtype=torch.bool), cache)
    layer_shape = f"empty_strided_cpu((1, {c.num_key_value_heads}, {capacity}, {c.head_dim})"
    assert "empty_strided_cpu" in code and layer_shape not in code


def test_requests_joining_and_leaving_a_running_batch_decode_as_if_alone(engine):
    """Continuous batching: a request that joins after 5 steps, with its own sampling values, and a request
    cancelled midway leave every other row's output exactly as it is when run alone."""
    greedy = SamplingParams(max_new_tokens=14, temperature=0, ignore_eos=True)
    sampled = SamplingParams(max_new_tokens=9, temperature=0.9, top_k=50, seed=3, n=2, ignore_eos=True,
                             presence_penalty=0.5)
    alone_a = engine.generate([PROMPTS[0]], greedy)[0]
    alone_b = engine.generate([PROMPTS[1]], sampled)[0]
    batch = engine.start([PROMPTS[0], PROMPTS[2]], greedy, handles=["a", "gone"])
    rows = {}
    for step in range(30):
        if step == 5:
            joining = engine.start([PROMPTS[1]], [sampled], handles=["b"])
            batch.extend(joining)
        if step == 3:
            batch.cancel("gone")
        for row in batch.rows:
            rows[(row.request.handle, row.index)] = row
        if not batch:
            break
        batch.step()
    assert ("gone", 0) in rows and len(rows["gone", 0].out.token_ids) == 3
    assert rows["a", 0].out.token_ids == alone_a[0].token_ids
    assert [rows["b", j].out.token_ids for j in range(2)] == [c.token_ids for c in alone_b]
    assert rows["b", 0].out.token_ids != rows["b", 1].out.token_ids


def test_cache_grows_past_its_first_capacity(engine):
    """The cache starts at 128 positions and doubles; 150 new tokens cross the boundary."""
    params = SamplingParams(max_new_tokens=150, temperature=0, ignore_eos=True)
    (completion,) = engine.generate([PROMPTS[1]], params)[0]
    assert completion.token_ids == naive_greedy(engine.model, PROMPTS[1], 150)


@pytest.mark.parametrize("name, overrides", [("tiny", {}), ("tiny-moe", {}), ("tiny-hybrid", {}),
                                             ("tiny", dict(use_sliding_window=True, sliding_window=5,
                                                           max_window_layers=1))])
def test_a_prefill_in_chunks_equals_one_forward(tokenizer, name, overrides):
    """`prefill(chunk=7)`: a 40-token shared prefix and left-padded tails of 9–30 tokens in forwards of 7 positions,
    yielding between them; the batch then decodes what `start`'s single forward gives."""
    model = make_model(name, **overrides)
    prefix = list(range(100, 140))
    prompts = [prefix + [5, 6, 7] * 3, prefix + list(range(300, 330)), prefix + [9] * 12]
    params = SamplingParams(max_new_tokens=10, temperature=0, ignore_eos=True, logprobs=0)
    engine = Engine(model, tokenizer)
    whole = engine.generate(prompts, params)
    pieces = list(engine.prefill(prompts, params, chunk=7))
    assert all(p is None for p in pieces[:-1]) and len(pieces) > 5
    batch, rows = pieces[-1], list(pieces[-1].rows)
    while batch:
        batch.step()
    for row, (alone,) in zip(rows, whole, strict=True):
        assert row.out.token_ids == alone.token_ids
        assert row.out.logprobs == pytest.approx(alone.logprobs, abs=1e-4)
