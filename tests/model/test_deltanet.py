"""Gated DeltaNet and the hybrid model: chunked = recurrent, the layer against transformers' Qwen3.5 layer, packed
rows, padded batches, cached decoding = a full recompute, the directory, and the route from a dense model."""

import json

import pytest
import torch
import torch.nn.functional as F

from minimind import Transformer, load_model, preset
from minimind.errors import MiniMindError
from minimind.infer import Engine, SamplingParams
from minimind.model.deltanet import chunked_delta_rule, l2norm, recurrent_delta_rule
from minimind.model.transformer import with_layer_types
from minimind.tokenizer import load_tokenizer
from tests.conftest import assert_packed_rows_equal_each_document_alone, make_model
from tests.infer.test_engine import naive_greedy as naive


def inputs(B=2, T=37, H=3, dk=8, dv=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = (l2norm(torch.randn(B, T, H, dk, generator=g)) for _ in range(2))
    v = torch.randn(B, T, H, dv, generator=g)
    decay = -F.softplus(torch.randn(B, T, H, generator=g))
    beta = torch.rand(B, T, H, generator=g)
    return q * dk ** -0.5, k, v, decay, beta


@pytest.mark.parametrize("chunk", [4, 16, 64])
def test_the_chunked_form_equals_the_recurrent_form(chunk):
    q, k, v, g, beta = inputs()
    start = torch.randn(2, 3, 8, 5)
    o1, s1 = recurrent_delta_rule(q, k, v, g, beta, start)
    o2, s2 = chunked_delta_rule(q, k, v, g, beta, start, chunk=chunk)
    torch.testing.assert_close(o2, o1, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(s2, s1, atol=1e-4, rtol=1e-4)
    # and a sequence cut in two carries its state across the cut
    oa, sa = chunked_delta_rule(*(t[:, :20] for t in (q, k, v, g, beta)), start, chunk=chunk)
    ob, sb = chunked_delta_rule(*(t[:, 20:] for t in (q, k, v, g, beta)), sa, chunk=chunk)
    torch.testing.assert_close(torch.cat([oa, ob], 1), o1, atol=1e-4, rtol=1e-4)


def test_the_layer_computes_what_transformers_qwen3_5_layer_computes():
    transformers = pytest.importorskip("transformers")
    from transformers.models.qwen3_5 import modeling_qwen3_5 as qwen3_5

    model = make_model("tiny-hybrid")
    ours = model.model.layers[0].linear_attn
    c = model.config
    config = transformers.Qwen3_5TextConfig(hidden_size=c.hidden_size, linear_num_value_heads=c.linear_num_value_heads,
                                            linear_num_key_heads=c.linear_num_key_heads,
                                            linear_key_head_dim=c.linear_key_head_dim,
                                            linear_value_head_dim=c.linear_value_head_dim,
                                            linear_conv_kernel_dim=c.linear_conv_kernel_dim, num_hidden_layers=2,
                                            layer_types=["linear_attention", "full_attention"], rms_norm_eps=1e-6)
    theirs = qwen3_5.Qwen3_5GatedDeltaNet(config, 0).eval()
    with torch.no_grad():
        ours.norm.weight.uniform_(0.5, 1.5)
        ours.dt_bias.uniform_(-1, 1)
    missing = theirs.load_state_dict(ours.state_dict(), strict=True)
    assert not missing.missing_keys
    x = torch.randn(2, 70, c.hidden_size)                       # more than one chunk of 64
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-4)


def test_packed_rows_and_padding_equal_each_sequence_alone(kernels):
    model = make_model("tiny-hybrid", kernels=kernels)
    assert_packed_rows_equal_each_document_alone(model)
    b = torch.randint(30, 400, (1, 8))
    with torch.no_grad():
        padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), b], 1)
        mask = torch.tensor([[0, 0, 0] + [1] * 8])
        torch.testing.assert_close(model(padded, attention_mask=mask).logits[:, 3:], model(b).logits,
                                   atol=1e-5, rtol=1e-5)


def test_cached_decoding_equals_a_full_recompute(kernels):
    model, tokenizer = make_model("tiny-hybrid", kernels=kernels), load_tokenizer()
    engine = Engine(model, tokenizer)
    prompts = [[1, *range(100, 140), 7], [1, *range(100, 140), 8, 9, 10]]      # a shared prefix: not shared here
    greedy = SamplingParams(max_new_tokens=80, temperature=0, ignore_eos=True)  # past one chunk of 64
    batch = engine.start(prompts, greedy)
    rows = batch.rows
    while batch:
        batch.step()
    for prompt, row in zip(prompts, rows, strict=True):
        assert row.out.token_ids == naive(model, prompt, 80)
    compiled = Engine(model, tokenizer, compile=True).generate([prompts[0]], greedy)[0][0]
    assert compiled.token_ids == rows[0].out.token_ids


def test_the_directory_is_its_own_and_transformers_refuses_it(tmp_path):
    model = make_model("tiny-hybrid")
    model.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["model_type"] == "minimind_hybrid" and saved["architectures"] == ["MiniMindHybridForCausalLM"]
    assert saved["layer_types"] == ["linear_attention", "full_attention"] and saved["linear_conv_kernel_dim"] == 4
    loaded = load_model(tmp_path / "m", device="cpu")
    x = torch.randint(30, 400, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits)
    transformers = pytest.importorskip("transformers")
    with pytest.raises(ValueError, match="minimind_hybrid"):
        transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m")


def test_a_dense_model_becomes_a_hybrid_keeping_what_both_share():
    dense = Transformer(preset("tiny"))
    hybrid = with_layer_types(dense, ["linear_attention", "full_attention"])
    assert hybrid.config.is_hybrid and hasattr(hybrid.model.layers[0], "linear_attn")
    kept = dense.state_dict()
    for name, tensor in hybrid.state_dict().items():
        if "linear_attn" not in name:
            assert torch.equal(tensor, kept[name]), name
    assert not any("layers.0.self_attn" in name for name in hybrid.state_dict())
    with pytest.raises(MiniMindError, match="layer_types"):
        with_layer_types(dense, ["linear_attention"])
    with torch.device("meta"):
        assert Transformer(preset("minimind-3-hybrid")).num_params() == 71_118_624     # MiniMind-Linear's 71.12M


def test_a_hybrid_and_a_windowed_model_train_through_the_trainer(tmp_path):
    from minimind.train.trainer import train
    from tests.train.test_trainer import WORDS, config, metrics

    rng = __import__("random").Random(0)
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(40))})
                                              + "\n" for _ in range(200)))
    files = {"train": [str(tmp_path / "p.jsonl")], "val": [], "seq_len": 32, "prepared": str(tmp_path / "prep")}
    out = train(config(tmp_path, tmp_path / "h", model="tiny-hybrid", max_steps=25, data=files))
    losses = [m["loss"] for m in metrics(tmp_path / "h")]
    assert losses[-1] < losses[0] - 1.0 and load_model(out, device="cpu").config.is_hybrid
    windowed = tmp_path / "w-init"
    Transformer(preset("tiny").replace(use_sliding_window=True, sliding_window=8)).save(windowed,
                                                                                        tokenizer=load_tokenizer())
    out = train(config(tmp_path, tmp_path / "w", model=str(windowed), max_steps=25, data=files))
    losses = [m["loss"] for m in metrics(tmp_path / "w")]
    assert losses[-1] < losses[0] - 1.0 and load_model(out, device="cpu").config.window(0) == 8
