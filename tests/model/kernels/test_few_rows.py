"""The few-rows decode kernel against the plain product: every row count (tiles of up to 12 included), the
fallbacks (outside `decoding`, autograd, shapes it does not take), packings owned by their `decoding` scope (a new
Engine sees changed weights), and a batch decoded through it token for token as the reference kernels decode it."""

import copy

import pytest
import torch
import torch.nn.functional as F

from minimind import Transformer, load_tokenizer, preset
from minimind.infer import Engine, SamplingParams
from minimind.model.kernels import few_rows, use_kernels
from minimind.model.layers import Linear
from minimind.model.moe import MoE

pytestmark = pytest.mark.skipif(few_rows.extension() is None, reason="needs an AVX-512 CPU and a C++ compiler")


def fast_linear(in_features: int, out_features: int, bias: bool = False) -> Linear:
    torch.manual_seed(0)
    return use_kernels(Linear(in_features, out_features, bias=bias), "auto")


@pytest.mark.parametrize("rows", [1, 2, 7, 8, 9, 13, 16, 25, 64])
@pytest.mark.parametrize("outputs", [144, 160, 176])                 # 3 panels of 48, and a last one of 16 or 32
def test_equals_the_plain_product_for_every_row_count(rows, outputs):
    layer, packs = fast_linear(96, outputs, bias=True), {}
    x = torch.randn(rows, 1, 96)
    with torch.no_grad(), few_rows.decoding(packs):
        y = layer(x)
    assert isinstance(layer, few_rows.FewRowsLinear) and packs[layer].numel() == outputs * 96
    torch.testing.assert_close(y, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", [1, 4, 6])
def test_bf16_weights_are_summed_in_fp32(rows):
    layer, packs = fast_linear(96, 160).to(torch.bfloat16), {}
    x = torch.randn(rows, 96, dtype=torch.bfloat16)
    with torch.no_grad(), few_rows.decoding(packs):
        y = layer(x)
    assert y.dtype == torch.bfloat16 and packs[layer].dtype == torch.bfloat16
    exact = (x.float() @ layer.weight.float().T).to(torch.bfloat16)      # the same sums, rounded once
    torch.testing.assert_close(y, exact, rtol=0.02, atol=0.02)


def test_falls_back_where_it_does_not_apply():
    packs, x = {}, torch.randn(3, 64)
    with few_rows.decoding(packs):
        layer = fast_linear(64, 40)                                # 40 outputs: not a multiple of 16
        with torch.no_grad():
            torch.testing.assert_close(layer(x), x @ layer.weight.T)
        layer = fast_linear(64, 64)
        y = layer(x.requires_grad_())                              # autograd: the plain product, with gradients
        y.sum().backward()
        assert x.grad is not None
        with torch.no_grad():
            layer(torch.randn(65, 64))                             # more rows than MAX_ROWS
            with torch.autocast("cpu", torch.bfloat16):
                layer(x)                                           # autocast decides the product's dtype
    with torch.no_grad():
        layer(x)                                                   # outside `decoding`
    assert packs == {}


def test_packings_belong_to_their_scope():
    """Weights changed without their version counter moving (CPU fused AdamW) are read afresh by a new scope."""
    layer, x = fast_linear(64, 64), torch.randn(4, 64)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1, fused=True)
    with torch.no_grad(), few_rows.decoding({}):
        before = layer(x)
    layer(x).sum().backward()
    optimizer.step()
    with torch.no_grad(), few_rows.decoding({}):
        after = layer(x)
    torch.testing.assert_close(after, x @ layer.weight.T)
    assert not torch.allclose(before, after)


@pytest.mark.parametrize("rows", [1, 3, 9])
def test_moe_experts_each_on_their_rows_equal_the_grouped_product(rows):
    """Top-2 of 4 experts for 1–9 rows (some experts chosen by none): the packed path equals the grouped GEMMs."""
    torch.manual_seed(0)
    moe = MoE(preset("tiny-moe"))
    for w in (moe.experts.gate_proj, moe.experts.up_proj, moe.experts.down_proj):
        torch.nn.init.normal_(w, std=0.1)
    fast, packs, x = use_kernels(copy.deepcopy(moe), "auto"), {}, torch.randn(rows, 64)
    experts = torch.tensor([[0, 2], [2, 0], [3, 0]] * 3)[:rows]            # expert 1 is never chosen
    weights = torch.rand(rows, 2)
    with torch.no_grad(), few_rows.decoding(packs):
        y = fast.run_experts(x, experts, weights)
        expected = moe.run_experts(x, experts, weights)
    assert isinstance(fast, few_rows.FewRowsMoE) and len(packs[fast]) == 3 * 4          # gate, up, down each
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["tiny", "tiny-moe"])
def test_a_batch_decodes_as_the_reference_kernels_decode_it(name):
    torch.manual_seed(0)
    config = preset(name)
    reference = Transformer(config).eval()
    fast = use_kernels(Transformer(config).eval(), "auto")
    fast.load_state_dict(reference.state_dict())
    tokenizer = load_tokenizer()
    prompts = [tokenizer.encode(text) for text in ("Once upon a time", "成语“一心一意”", "To be, or not", "1 + 1 =")]
    params = SamplingParams(max_new_tokens=16, temperature=0, ignore_eos=True)
    expected = [c[0].token_ids for c in Engine(reference, tokenizer).generate(prompts, params)]
    engine = Engine(fast, tokenizer)
    assert [c[0].token_ids for c in engine.generate(prompts, params)] == expected
    kinds = {type(m) for m in engine._packs}
    assert kinds == ({few_rows.FewRowsLinear, few_rows.FewRowsMoE} if config.is_moe else {few_rows.FewRowsLinear})
