import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from minimind import MiniMindError, load_model
from minimind.model.io import to_checkpoint
from tests.conftest import make_model


def test_round_trip_is_exact(model, kernels, tmp_path):
    model.save(tmp_path / "m")
    assert sorted(os.listdir(tmp_path / "m")) == ["config.json", "generation_config.json", "model.safetensors"]
    loaded = load_model(tmp_path / "m", device="cpu", kernels=kernels)
    assert loaded.config == model.config and not loaded.training
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    x = torch.randint(0, 6400, (1, 12))
    with torch.no_grad():
        assert torch.equal(model(x).logits, loaded(x).logits)


def test_checkpoint_names_are_transformers_names(tmp_path):
    make_model("tiny-moe").save(tmp_path / "m")
    names = set(load_file(tmp_path / "m" / "model.safetensors"))
    assert "lm_head.weight" not in names                       # tied: stored once, as the embedding
    assert "model.layers.1.mlp.experts.3.down_proj.weight" in names
    assert "model.layers.0.mlp.gate.weight" in names
    assert "model.layers.0.self_attn.q_norm.weight" in names
    assert not any(n.endswith("experts.gate_proj") for n in names)


def test_tied_head_stays_tied_after_load(tmp_path):
    make_model().save(tmp_path / "m")
    m = load_model(tmp_path / "m", device="cpu")
    assert m.lm_head.weight is m.model.embed_tokens.weight


def test_untied_model_round_trip(tmp_path):
    model = make_model(tie_word_embeddings=False)
    model.save(tmp_path / "m")
    assert "lm_head.weight" in load_file(tmp_path / "m" / "model.safetensors")
    m = load_model(tmp_path / "m", device="cpu")
    assert torch.equal(m.lm_head.weight, model.lm_head.weight)
    assert m.lm_head.weight is not m.model.embed_tokens.weight


def test_save_in_half_precision(tmp_path):
    make_model().save(tmp_path / "m", dtype=torch.bfloat16)
    assert json.loads((tmp_path / "m" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert load_file(tmp_path / "m" / "model.safetensors")["model.norm.weight"].dtype == torch.bfloat16
    assert load_model(tmp_path / "m", device="cpu").lm_head.weight.dtype == torch.float32     # CPU default
    assert load_model(tmp_path / "m", device="cpu", dtype=torch.bfloat16).lm_head.weight.dtype == torch.bfloat16


def test_save_replaces_atomically(tmp_path):
    make_model(seed=1).save(tmp_path / "m")
    (tmp_path / "m" / "stale.txt").write_text("from the old directory")
    new = make_model(seed=2)
    new.save(tmp_path / "m")
    assert not (tmp_path / "m" / "stale.txt").exists()
    assert os.listdir(tmp_path) == ["m"]                         # no temporary directories left behind
    assert torch.equal(load_model(tmp_path / "m", device="cpu").lm_head.weight, new.lm_head.weight)


def test_failed_save_leaves_the_old_directory(tmp_path, monkeypatch):
    make_model(seed=1).save(tmp_path / "m")
    before = (tmp_path / "m" / "model.safetensors").read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr("minimind.model.save.save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        make_model(seed=2).save(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == before
    assert os.listdir(tmp_path) == ["m"]


def test_sharded_checkpoint_loads(tmp_path):
    model = make_model()
    tensors = to_checkpoint(model.state_dict(), model.config)
    names = sorted(tensors)
    d = tmp_path / "m"
    d.mkdir()
    model.config.save(d / "config.json")
    shards = {"model-00001-of-00002.safetensors": names[:5], "model-00002-of-00002.safetensors": names[5:]}
    for file, part in shards.items():
        save_file({n: tensors[n] for n in part}, d / file)
    weight_map = {n: f for f, part in shards.items() for n in part}
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert torch.equal(load_model(d, device="cpu").model.norm.weight, model.model.norm.weight)


@pytest.fixture
def saved(tmp_path):
    make_model("tiny-moe").save(tmp_path / "m")
    return tmp_path / "m"


def test_missing_weights_file(saved):
    (saved / "model.safetensors").unlink()
    with pytest.raises(MiniMindError, match=r"m/model.safetensors: file not found"):
        load_model(saved, device="cpu")


def test_truncated_weights_file(saved):
    data = (saved / "model.safetensors").read_bytes()
    (saved / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(MiniMindError, match=r"model.safetensors: not a readable safetensors file, truncated"):
        load_model(saved, device="cpu")


def test_garbage_weights_file(saved):
    (saved / "model.safetensors").write_bytes(b"\x00" * 3)
    with pytest.raises(MiniMindError, match=r"model.safetensors: not a readable safetensors file"):
        load_model(saved, device="cpu")


def _set(name, value):
    def change(tensors):
        tensors[name] = value
    return change


@pytest.mark.parametrize("change, message", [
    (_set("model.layers.1.self_attn.k_proj.weight", torch.zeros(16, 64)),
     r"tensor 'model.layers.1.self_attn.k_proj.weight' has shape \[16, 64\], the config implies \[32, 64\]"),
    (lambda tensors: tensors.pop("model.layers.0.mlp.experts.2.up_proj.weight"),
     r"missing tensor 'model.layers.0.mlp.experts.2.up_proj.weight'"),
    (_set("model.layers.7.mlp.gate.weight", torch.zeros(4, 64)),
     r"unexpected tensor 'model.layers.7.mlp.gate.weight'"),
])
def test_tensor_problems_are_named(saved, change, message):
    tensors = load_file(saved / "model.safetensors")
    change(tensors)
    save_file(tensors, saved / "model.safetensors")
    with pytest.raises(MiniMindError, match=message):
        load_model(saved, device="cpu")


def test_unknown_model_type(saved):
    config = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps(config | {"model_type": "gpt2"}))
    with pytest.raises(MiniMindError, match=r"m/config.json: unknown model_type 'gpt2'"):
        load_model(saved, device="cpu")


def test_missing_config_field(saved):
    config = json.loads((saved / "config.json").read_text())
    del config["moe_intermediate_size"]
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(MiniMindError, match=r"m/config.json: missing field 'moe_intermediate_size'"):
        load_model(saved, device="cpu")


def test_config_not_json(saved):
    (saved / "config.json").write_text("{not json")
    with pytest.raises(MiniMindError, match=r"m/config.json: not valid JSON"):
        load_model(saved, device="cpu")


def test_not_a_directory(tmp_path):
    with pytest.raises(MiniMindError, match="not a model directory"):
        load_model(tmp_path / "nowhere", device="cpu")


def test_save_never_replaces_a_directory_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(MiniMindError, match="not a directory this command wrote"):
        make_model().save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"
