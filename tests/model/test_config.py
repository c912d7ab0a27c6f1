import json

import pytest
import torch

from minimind import MiniMindError, ModelConfig, Transformer, preset
from minimind.config import PRESETS
from minimind.overrides import apply_overrides


def counts(name):
    with torch.device("meta"):
        m = Transformer(preset(name))
    return m.num_params(), m.num_params(active=True)


@pytest.mark.parametrize("name, total, active", [
    ("minimind-3", 63.9e6, 63.9e6),
    ("minimind-3-moe", 198.4e6, 63.9e6),
    ("minimind2-small", 26e6, 26e6),
    ("minimind2", 104e6, 104e6),
    ("minimind2-moe", 118.5e6, 65.4e6),       # the reference's 145M less its shared expert (8 × 3 × 640 × 1728)
])
def test_preset_parameter_counts(name, total, active):
    n, a = counts(name)
    assert abs(n - total) / total < 0.01
    assert abs(a - active) / active < 0.01


def test_minimind3_exact_shape():
    c = preset("minimind-3")
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.head_dim,
            c.intermediate_size, c.vocab_size, c.tie_word_embeddings, c.rope_theta) == \
        (768, 8, 8, 4, 96, 2432, 6400, True, 1e6)
    assert counts("minimind-3")[0] == 63_912_192          # the reference's log prints 63.91M


@pytest.mark.parametrize("name", list(PRESETS))
def test_config_json_round_trip(name):
    c = preset(name)
    d = json.loads(json.dumps(c.to_hf_dict()))
    family = ("qwen3_moe", "Qwen3MoeForCausalLM") if c.is_moe else ("qwen3", "Qwen3ForCausalLM")
    if c.is_hybrid:                               # no stock class computes it: its own names, the family beside
        assert d["decoder_model_type"] == family[0]
        family = ("minimind_hybrid", "MiniMindHybridForCausalLM")
    assert d["model_type"] == family[0] and d["architectures"] == [family[1]]
    assert ModelConfig.from_hf_dict(d) == c


def test_reads_transformers5_layout():
    d = preset("tiny-moe").to_hf_dict()
    del d["rope_theta"], d["rope_scaling"], d["num_experts"]
    d["num_local_experts"] = 4
    d["rope_parameters"] = {"rope_theta": 5e5, "rope_type": "yarn", "factor": 4.0,
                            "original_max_position_embeddings": 512}
    c = ModelConfig.from_hf_dict(d)
    assert c.num_experts == 4 and c.rope_theta == 5e5
    assert c.rope_scaling["factor"] == 4.0 and c.rope_scaling["original_max_position_embeddings"] == 512
    d["rope_parameters"] = {"rope_theta": 5e5, "rope_type": "default"}
    assert ModelConfig.from_hf_dict(d).rope_scaling is None


def test_reads_legacy_rope_scaling_with_type_key():
    d = preset("tiny").to_hf_dict()
    d["rope_scaling"] = {"type": "yarn", "factor": 16, "original_max_position_embeddings": 128}
    assert ModelConfig.from_hf_dict(d).rope_scaling["rope_type"] == "yarn"


@pytest.mark.parametrize("change, message", [
    ({"model_type": "gpt2"}, "unknown model_type 'gpt2'"),
    ({"model_type": "llama", "attention_bias": True}, "'attention_bias' is true"),
    ({"mlp_bias": True}, "'mlp_bias' is true"),
    ({"hidden_size": None}, "'hidden_size' must be a positive integer"),
    ({"num_key_value_heads": 3}, "multiple of num_key_value_heads"),
    ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "only 'yarn'"),
    ({"tie_word_embeddings": "yes"}, "'tie_word_embeddings' must be true or false"),
    ({"hidden_act": "gelu"}, "'hidden_act'"),
])
def test_bad_config_names_the_field(change, message):
    d = preset("tiny").to_hf_dict() | change
    with pytest.raises(MiniMindError, match=message):
        ModelConfig.from_hf_dict(d, source="x/config.json")


def test_missing_field_is_named():
    d = preset("tiny").to_hf_dict()
    del d["num_hidden_layers"]
    with pytest.raises(MiniMindError, match=r"x/config.json: missing field 'num_hidden_layers'"):
        ModelConfig.from_hf_dict(d, source="x/config.json")


def test_overrides_are_typed_and_checked():
    c = apply_overrides(preset("tiny"), ["hidden_size=128", "tie_word_embeddings=false", "rope_theta=1e4",
                                         'rope_scaling={"rope_type": "yarn", "factor": 2}'])
    assert (c.hidden_size, c.tie_word_embeddings, c.rope_theta) == (128, False, 1e4)
    assert c.rope_scaling["original_max_position_embeddings"] == c.max_position_embeddings
    with pytest.raises(MiniMindError, match="unknown config key 'hidden'"):
        apply_overrides(c, ["hidden=3"])
    with pytest.raises(MiniMindError, match="'num_hidden_layers' must be an integer"):
        apply_overrides(c, ["num_hidden_layers=two"])
    with pytest.raises(MiniMindError, match="key=value"):
        apply_overrides(c, ["num_hidden_layers"])


def test_architecture_flags_must_name_a_family():
    with pytest.raises(MiniMindError, match="matches no supported architecture"):
        preset("tiny").replace(attention_bias=True)                 # qk-norm and biases: no such family
    with pytest.raises(MiniMindError, match="in an MoE model"):
        preset("tiny-moe").replace(qk_norm=False)
    assert preset("tiny").replace(qk_norm=False).to_hf_dict()["architectures"] == ["LlamaForCausalLM"]
