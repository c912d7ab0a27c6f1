"""`minimind import` of the reference project's own weights: its .pth state dicts and its `model_type: minimind`
transformers directories. The tensors carry the reference's names (those of transformers' Qwen3), the shapes are
read from them, the rest is MiniMindConfig's defaults. (Checked once against the reference's own model code,
fetched for the purpose: identical logits, dense and MoE; docs/export.md.)"""

import json

import pytest
import torch

from minimind import MiniMindError, load_model
from minimind.cli import main
from minimind.export.reference import infer_config
from minimind.model.save import to_checkpoint
from minimind.tokenizer.tokenizer import DEFAULT_DIR
from tests.conftest import make_model


def reference_state(model) -> dict[str, torch.Tensor]:
    """The model's tensors as the reference's `torch.save(model.state_dict())` holds them: its names, the tied
    head stored beside the embedding, fp16."""
    state = to_checkpoint(model.state_dict(), model.config)
    state["lm_head.weight"] = state["model.embed_tokens.weight"]
    return {k: v.half() for k, v in state.items()}


@pytest.mark.parametrize("name, top_k", [("tiny", None), ("tiny-moe", 2)])
def test_a_pth_state_dict_imports_with_the_same_logits(tmp_path, name, top_k):
    model = make_model(name, rms_norm_eps=1e-6, rope_theta=1e6, max_position_embeddings=32768)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    torch.save(reference_state(model), tmp_path / "full_sft_64.pth")
    overrides = [f"num_experts_per_tok={top_k}"] if top_k else []
    assert main(["import", str(tmp_path / "full_sft_64.pth"), "--out", str(tmp_path / "m"),
                 "--tokenizer", str(DEFAULT_DIR), *overrides]) == 0
    ours = load_model(tmp_path / "m", device="cpu")
    assert ours.config.is_moe == model.config.is_moe and ours.config.tie_word_embeddings
    assert (ours.config.num_attention_heads, ours.config.num_key_value_heads, ours.config.head_dim) == (4, 2, 16)
    assert (tmp_path / "m" / "tokenizer.json").is_file()
    x = torch.randint(0, 6400, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(ours(x).logits, model(x).logits, atol=1e-5, rtol=0)


def test_a_model_type_minimind_directory_imports(tmp_path):
    model = make_model("tiny-moe", rms_norm_eps=1e-6, rope_theta=1e6)
    directory = tmp_path / "MiniMind2"
    directory.mkdir()
    torch.save(reference_state(model), directory / "pytorch_model.bin")
    c = model.config
    (directory / "config.json").write_text(json.dumps({
        "model_type": "minimind", "architectures": ["MiniMindForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 192,
        "use_moe": True, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 96,
        "max_position_embeddings": c.max_position_embeddings, "rope_theta": 1e6, "rms_norm_eps": 1e-6,
        "inference_rope_scaling": False, "rope_scaling": None}))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (directory / name).write_bytes((DEFAULT_DIR / name).read_bytes())
    assert main(["import", str(directory), "--out", str(tmp_path / "m")]) == 0
    ours = load_model(tmp_path / "m", device="cpu")
    assert ours.config.num_experts_per_tok == 2
    x = torch.randint(0, 6400, (1, 16))
    with torch.no_grad():
        assert (ours(x).logits - model.half().float()(x).logits).abs().max() < 1e-2


def test_what_a_state_dict_cannot_say_comes_from_the_reference_defaults(tmp_path):
    config = infer_config(reference_state(make_model("tiny")), tmp_path / "x.pth")
    assert (config.rope_theta, config.rms_norm_eps, config.max_position_embeddings) == (1e6, 1e-6, 32768)
    moe = infer_config(reference_state(make_model("tiny-moe")), tmp_path / "x.pth")
    assert (moe.num_experts, moe.num_experts_per_tok, moe.moe_intermediate_size, moe.norm_topk_prob) == (4, 1, 96, True)


def test_bad_reference_files_are_named(tmp_path, capsys):
    state = reference_state(make_model("tiny-moe"))
    torch.save(state | {"model.layers.0.mlp.shared_experts.gate_proj.weight": torch.zeros(8, 64)}, tmp_path / "s.pth")
    torch.save(state, tmp_path / "ok.pth")
    (tmp_path / "bad.pth").write_bytes(b"not a torch file")
    for argv, message in [
        ([str(tmp_path / "s.pth")], "a shared expert (the older minimind2-moe layout)"),
        ([str(tmp_path / "bad.pth")], "bad.pth: not a readable torch state dict"),
        ([str(tmp_path / "ok.pth")], "no tokenizer: pass --tokenizer DIR"),
        ([str(tmp_path / "ok.pth"), "--tokenizer", str(DEFAULT_DIR), "num_experts=8"],
         "missing tensor 'model.layers.0.mlp.experts.4"),
    ]:
        assert main(["import", *argv, "--out", str(tmp_path / "out")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(MiniMindError, match="expected a dict of tensor names"):
        torch.save([1, 2], tmp_path / "list.pth")
        from minimind.export.reference import import_reference
        import_reference(tmp_path / "list.pth", tmp_path / "out", tokenizer=DEFAULT_DIR)


def test_reference_weights_given_as_a_model_directory_say_how_to_convert_them(tmp_path):
    torch.save(reference_state(make_model()), tmp_path / "full_sft_64.pth")
    with pytest.raises(MiniMindError, match=r"a torch state dict.*minimind import"):
        load_model(tmp_path / "full_sft_64.pth")
    (tmp_path / "MiniMind2").mkdir()
    (tmp_path / "MiniMind2" / "config.json").write_text('{"model_type": "minimind", "hidden_size": 64}')
    with pytest.raises(MiniMindError, match=r"model_type 'minimind' is the reference project's own class"):
        load_model(tmp_path / "MiniMind2")
