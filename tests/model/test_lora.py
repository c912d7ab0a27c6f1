"""LoRA: starts as the base, trains only adapters, merges exactly, saves and reloads in PEFT's layout."""

import json

import pytest
import torch

from minimind.errors import MiniMindError
from minimind.lora import LoRAConfig, adapter_tensors, apply_lora, load_adapter, merge, save_adapter
from tests.conftest import make_model

IDS = torch.tensor([[1, 50, 700, 33, 9, 4000], [1, 8, 8, 600, 21, 2]])


def randomize(model):
    """Non-zero B, so the adapter changes the output."""
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)


@pytest.mark.parametrize("name", ["tiny", "tiny-moe"])
def test_lora_with_b_zero_changes_nothing(name):
    base = make_model(name)
    with torch.no_grad():
        before = base(IDS).logits
        names = apply_lora(base, LoRAConfig(rank=4, dropout=0.1))
        after = base.eval()(IDS).logits
    assert all(n.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) or "mlp" in n for n in names) and names
    assert torch.equal(before, after)


def test_only_adapter_tensors_get_gradients():
    model = make_model("tiny")
    apply_lora(model, LoRAConfig(rank=4, targets=["q_proj", "o_proj"]))
    model(IDS, labels=IDS).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {n for n, _ in model.named_parameters() if "lora_" in n}
    assert all(n.split(".")[-2] in ("q_proj", "o_proj") for n in with_grad)
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n.endswith("lora_B"))   # A: B = 0


def test_merged_equals_unmerged():
    model = make_model("tiny")
    apply_lora(model, LoRAConfig(rank=4, alpha=8))
    randomize(model)
    with torch.no_grad():
        unmerged = model(IDS).logits
        merged = merge(model)(IDS).logits
    assert not any("lora" in k for k in model.state_dict())
    assert (merged - unmerged).abs().max() <= 1e-5


def test_saved_adapter_reloads_identically_in_peft_layout(tmp_path):
    model = make_model("tiny")
    apply_lora(model, LoRAConfig(rank=4, alpha=8, targets=["q_proj", "v_proj", "down_proj"]))
    randomize(model)
    save_adapter(model, tmp_path / "adapter", base="some/base")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8
    assert sorted(config["target_modules"]) == ["down_proj", "q_proj", "v_proj"]
    reloaded = load_adapter(make_model("tiny"), tmp_path / "adapter")
    with torch.no_grad():
        assert torch.equal(reloaded.eval()(IDS).logits, model.eval()(IDS).logits)
    assert adapter_tensors(reloaded).keys() == adapter_tensors(model).keys()
    assert next(iter(adapter_tensors(model))).startswith("base_model.model.model.layers.0.")


def test_bad_adapters_are_clear_errors(tmp_path):
    with pytest.raises(MiniMindError, match="not a LoRA adapter directory"):
        load_adapter(make_model("tiny"), tmp_path)
    model = make_model("tiny")
    apply_lora(model, LoRAConfig(rank=4))
    save_adapter(model, tmp_path / "a")
    with pytest.raises(MiniMindError, match="lora_A.weight: shape"):
        load_adapter(make_model("tiny", hidden_size=32, head_dim=8, intermediate_size=64), tmp_path / "a")
    with pytest.raises(MiniMindError, match="match no linear layer"):
        apply_lora(make_model("tiny"), LoRAConfig(targets=["nothing"]))


def test_peft_loads_our_adapter_onto_the_transformers_model(tmp_path):
    """Where `peft` is installed: transformers' Qwen3 + our adapter through PEFT = our adapted model."""
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    model = make_model("tiny")
    model.save(tmp_path / "base")
    apply_lora(model, LoRAConfig(rank=4, alpha=8))
    randomize(model)
    save_adapter(model, tmp_path / "adapter", base=str(tmp_path / "base"))
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base", dtype=torch.float32)
    hf = peft.PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
    with torch.no_grad():
        assert (hf(IDS).logits - model.eval()(IDS).logits).abs().max() <= 1e-4
