"""Weight-only quantization: the kernels compute x·Ŵᵀ for the dequantized weights, and a quantized model stays
close to fp32 (int8 per row; int4 in groups)."""

import pytest
import torch

from minimind.cli import main
from minimind.errors import MiniMindError
from minimind.infer import Engine, SamplingParams
from minimind.infer.quant import Int4Linear, Int8Linear, quantize
from minimind.lora import LoRAConfig, apply_lora
from minimind.model.layers import Linear
from minimind.tokenizer import load_tokenizer
from tests.conftest import make_model


def test_int8_linear_is_per_row_rounding_and_its_product():
    torch.manual_seed(0)
    linear = Linear(64, 48)
    q = Int8Linear(linear)
    w, scales = linear.weight.detach(), linear.weight.detach().abs().amax(1) / 127
    assert q.weight.dtype == torch.int8 and q.weight.abs().max() == 127
    dequantized = q.weight.float() * q.scales[:, None]
    assert torch.allclose(q.scales, scales)
    assert ((dequantized - w).abs() <= scales[:, None] / 2 + 1e-7).all()           # round to nearest
    x = torch.randn(3, 5, 64)
    torch.testing.assert_close(q(x), x @ dequantized.T, atol=1e-5, rtol=1e-5)


def test_int4_linear_is_group_wise_rounding_and_its_product():
    """Ŵ equals (q − 8)·s + z per group of 32 inputs, every weight within half a step of its group's grid, and the
    kernel's product equals x·Ŵᵀ."""
    torch.manual_seed(0)
    linear = Linear(64, 48)
    q = Int4Linear(linear, group=32)
    w = linear.weight.detach()
    deq = q.dequantized()
    groups = w.reshape(48, 2, 32)
    step = (groups.amax(-1) - groups.amin(-1)) / 15                          # [48, 2]
    assert ((deq - w).abs().reshape(48, 2, 32) <= step[..., None] / 2 + 1e-6).all()
    assert 2 <= len(torch.unique(deq[0, :32])) <= 16                         # at most 16 levels per group
    x = torch.randn(3, 5, 64)
    torch.testing.assert_close(q(x), x @ deq.T, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind, tolerance, agree", [("int8", 0.05, 0.9), ("int4", 0.5, 0.3)])
@pytest.mark.parametrize("name", ["tiny", "tiny-moe"])
def test_quantized_model_stays_close(name, kind, tolerance, agree):
    model = make_model(name)
    x = torch.randint(0, 6400, (2, 32))
    with torch.no_grad():
        ref = model(x).logits
        quantized = quantize(model, kind)
        out = quantized(x).logits
    assert not any(isinstance(m, Linear) for m in quantized.modules())
    rel = (out - ref).norm() / ref.norm()
    assert 0 < rel < tolerance              # on a wide-init random model; trained models: see bits per byte
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() > agree    # chance: 1 / 6400
    engine, greedy = Engine(quantized, load_tokenizer()), SamplingParams(max_new_tokens=8, temperature=0.0,
                                                                         ignore_eos=True)
    prompts = [[1, 400, 2000], [1, 77]]                       # a batch: the kernels get non-contiguous rows
    batch = [c[0].token_ids for c in engine.generate(prompts, greedy)]
    assert batch == [engine.generate([p], greedy)[0][0].token_ids for p in prompts] and len(batch[0]) == 8


def test_unmerged_lora_is_refused_and_cli_flag_works(tmp_path, capsys):
    model = make_model("tiny")
    apply_lora(model, LoRAConfig(rank=4, alpha=8.0, targets=["q_proj"]))
    with pytest.raises(MiniMindError, match="merge the LoRA adapter"):
        quantize(model, "int8")
    make_model("tiny").save(tmp_path / "m")
    for kind in ("int8", "int4"):
        assert main(["generate", "--model", str(tmp_path / "m"), "--prompt", "Hello", "--quant", kind,
                     "--max-new-tokens", "4", "--temperature", "0", "--device", "cpu"]) == 0
