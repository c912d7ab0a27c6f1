"""Sliding-window attention (Qwen3's fields): parity with transformers past the window both ways, packed rows,
padded batches, and cached decoding equal to a full recompute."""

import json

import pytest
import torch

from minimind import load_model
from minimind.config import ModelConfig
from minimind.errors import MiniMindError
from minimind.infer import Engine, SamplingParams
from minimind.tokenizer import load_tokenizer
from tests.conftest import assert_packed_rows_equal_each_document_alone, make_model
from tests.infer.test_engine import naive_greedy as naive

transformers = pytest.importorskip("transformers")
WINDOW = dict(use_sliding_window=True, sliding_window=5, max_window_layers=1)     # layer 1 slides, layer 0 is full


def test_the_config_says_which_layers_slide_in_both_transformers_layouts():
    config = make_model(**WINDOW).config
    assert config.attention_types == ["full_attention", "sliding_attention"] and config.window(1) == 5
    d = config.to_hf_dict()
    assert d["use_sliding_window"] and d["sliding_window"] == 5 and d["max_window_layers"] == 1
    assert d["layer_types"] == ["full_attention", "sliding_attention"]
    assert ModelConfig.from_hf_dict(d).attention_types == config.attention_types
    plain = make_model().config.to_hf_dict()
    assert not plain["use_sliding_window"] and plain["sliding_window"] is None and "layer_types" not in plain
    with pytest.raises(MiniMindError, match="layer_types"):
        make_model(layer_types=["full_attention"])
    older = {k: v for k, v in d.items() if k != "layer_types"} | {"max_window_layers": 0}   # transformers 4's
    assert ModelConfig.from_hf_dict(older).attention_types == ["sliding_attention"] * 2


def test_transformers_reads_our_windowed_model(tmp_path, kernels):
    ours = make_model(kernels=kernels, **WINDOW)
    ours.save(tmp_path / "m")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m", dtype=torch.float32).eval()
    assert theirs.config.layer_types == ["full_attention", "sliding_attention"]
    x = torch.randint(30, 6400, (2, 23))
    mask = torch.ones_like(x)
    mask[1, :6] = 0                                                     # left padding in the second row
    with torch.no_grad():
        a, b = ours(x, attention_mask=mask).logits, theirs(x, attention_mask=mask).logits
    assert (a - b)[mask.bool()].abs().max() <= 1e-4
    full = make_model(kernels=kernels)                                  # the window changes the result
    assert (full(x).logits - ours(x).logits).abs().max() > 0.1


def test_we_read_a_transformers_windowed_model(tmp_path):
    torch.manual_seed(0)
    config = transformers.Qwen3Config(vocab_size=512, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                                      num_key_value_heads=2, head_dim=16, intermediate_size=128, initializer_range=0.2,
                                      use_sliding_window=True, sliding_window=4, max_window_layers=1,
                                      layer_types=["sliding_attention", "full_attention", "sliding_attention"])
    theirs = transformers.Qwen3ForCausalLM(config).eval()
    theirs.save_pretrained(tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["layer_types"][0] == "sliding_attention"
    ours = load_model(tmp_path / "hf", device="cpu")
    assert ours.config.attention_types == config.layer_types
    x = torch.randint(0, 512, (2, 19))
    with torch.no_grad():
        assert (ours(x).logits - theirs(x).logits).abs().max() <= 1e-4


def test_packed_rows_equal_each_document_alone(kernels):
    assert_packed_rows_equal_each_document_alone(make_model(kernels=kernels, **WINDOW))


def test_cached_decoding_equals_a_full_recompute_past_the_window(kernels):
    model, tokenizer = make_model(kernels=kernels, **WINDOW), load_tokenizer()
    prompts = [[1, 200, 300, 400, 500, 600, 700], [1, 250, 350]]
    out = Engine(model, tokenizer).generate(prompts, SamplingParams(max_new_tokens=12, temperature=0,
                                                                    ignore_eos=True))
    for prompt, (completion,) in zip(prompts, out, strict=True):
        ids = torch.tensor([prompt])
        with torch.no_grad():
            for _ in range(12):                                         # no cache: the whole sequence each step
                ids = torch.cat([ids, model(ids).logits[:, -1:].argmax(-1)], 1)
        assert completion.token_ids == ids[0, len(prompt):].tolist()


def test_the_ring_keeps_a_sliding_layers_memory_fixed(kernels):
    model, tokenizer = make_model(kernels=kernels, **WINDOW), load_tokenizer()
    engine = Engine(model, tokenizer)
    prefix = list(range(100, 140))                                  # shared by both prompts: prefilled once
    prompts = [[1, *prefix, 7, 8], [1, *prefix, 9]]
    greedy = SamplingParams(max_new_tokens=140, temperature=0, ignore_eos=True)
    batch = engine.start(prompts, greedy)
    rows = batch.rows
    while batch:
        batch.step()
    assert batch.cache.k[1].shape[2] == 5 and batch.cache.k[0].shape[2] >= 180     # the ring, the growing layer
    for prompt, row in zip(prompts, rows, strict=True):
        assert row.out.token_ids == naive(model, prompt, 140)


def test_rows_joining_a_windowed_batch_decode_as_if_alone():
    model, tokenizer = make_model(**WINDOW), load_tokenizer()
    engine = Engine(model, tokenizer)
    greedy = SamplingParams(max_new_tokens=12, temperature=0, ignore_eos=True)
    batch = engine.start([[1, 200, 300, 400]], greedy, handles=["a"])
    rows = {}
    for step in range(20):
        if step == 4:
            batch.extend(engine.start([[1, 500, 600, 700, 800, 900, 901, 902]], greedy, handles=["b"]))
        rows |= {row.request.handle: row for row in batch.rows}
        if not batch:
            break
        batch.step()
    assert rows["a"].out.token_ids == naive(model, [1, 200, 300, 400], 12)
    assert rows["b"].out.token_ids == naive(model, [1, 500, 600, 700, 800, 900, 901, 902], 12)


def test_the_compiled_step_decodes_through_the_ring_as_eager_does():
    model, tokenizer = make_model(**WINDOW), load_tokenizer()
    params = SamplingParams(max_new_tokens=24, temperature=0, ignore_eos=True)
    eager = Engine(model, tokenizer).generate([[1, 5, 6, 7]], params)[0][0]
    compiled = Engine(model, tokenizer, compile=True).generate([[1, 5, 6, 7]], params)[0][0]
    assert compiled.token_ids == eager.token_ids == naive(model, [1, 5, 6, 7], 24)
