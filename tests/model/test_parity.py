"""The contract of the model directory: transformers reads ours, we read transformers', same logits — with the
fast kernels and with the reference model alike."""

import pytest
import torch

from minimind import load_model
from minimind.config import yarn
from minimind.infer import Engine, SamplingParams
from minimind.tokenizer import load_tokenizer
from tests.conftest import make_model

transformers = pytest.importorskip("transformers")

CASES = [("tiny", None), ("tiny", yarn(4, 256)), ("tiny-moe", None), ("tiny-moe", yarn(4, 256))]


@pytest.mark.parametrize("name, rope_scaling", CASES)
def test_transformers_reads_our_directory(tmp_path, name, rope_scaling, kernels):
    ours = make_model(name, kernels=kernels, rope_scaling=rope_scaling)
    ours.save(tmp_path / "m")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m", dtype=torch.float32).eval()
    assert type(theirs).__name__ == ("Qwen3MoeForCausalLM" if ours.config.is_moe else "Qwen3ForCausalLM")
    x = torch.randint(0, 6400, (2, 96))       # past YaRN's original 64… positions matter: use 96
    with torch.no_grad():
        a, b = ours(x), theirs(x, labels=x)
        loss = ours(x, labels=x).loss
    assert (a.logits - b.logits).abs().max() <= 1e-4
    assert a.logits.std() > 0.5                  # not a degenerate near-uniform model
    if not ours.config.is_moe:
        torch.testing.assert_close(loss, b.loss, atol=1e-5, rtol=0)


def hf_model(moe: bool, yarn_block: dict | None):
    common = dict(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=16, intermediate_size=128, max_position_embeddings=1024, initializer_range=0.2,
                  tie_word_embeddings=False)
    rope = {"rope_theta": 10000.0, "rope_type": "default"} if yarn_block is None else \
        {"rope_theta": 10000.0} | yarn_block
    torch.manual_seed(0)
    if moe:
        config = transformers.Qwen3MoeConfig(**common, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=48,
                                             norm_topk_prob=True, rope_parameters=rope)
        return transformers.Qwen3MoeForCausalLM(config).eval()
    return transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**common, rope_parameters=rope)).eval()


@pytest.mark.parametrize("moe, yarn_block", [(False, None), (False, yarn(4, 256)), (True, None),
                                             (True, yarn(4, 256))])
def test_we_read_a_transformers_directory(tmp_path, moe, yarn_block, kernels):
    theirs = hf_model(moe, yarn_block)
    theirs.save_pretrained(tmp_path / "hf")
    ours = load_model(tmp_path / "hf", device="cpu", kernels=kernels)
    assert ours.config.is_moe == moe and ours.config.tie_word_embeddings is False
    assert (ours.config.rope_scaling is not None) == (yarn_block is not None)
    x = torch.randint(0, 512, (2, 80))
    with torch.no_grad():
        a, b = ours(x).logits, theirs(x).logits
    assert (a - b).abs().max() <= 1e-4
    assert a.std() > 0.5


@pytest.mark.parametrize("name", ["tiny", "tiny-moe"])
def test_greedy_generation_matches_transformers(tmp_path, name, kernels):
    ours = make_model(name, kernels=kernels)
    ours.save(tmp_path / "m")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m", dtype=torch.float32).eval()
    prompt = [1, 400, 2000, 33]
    params = SamplingParams(max_new_tokens=16, temperature=0, ignore_eos=True)    # HF does not stop either
    mine = Engine(ours, load_tokenizer()).generate([prompt], params)[0][0].token_ids
    out = theirs.generate(torch.tensor([prompt]), max_new_tokens=16, do_sample=False, eos_token_id=None,
                          pad_token_id=0, min_new_tokens=16)
    assert mine == out[0, len(prompt):].tolist()
    assert len(set(mine)) > 2                   # the output actually varies


def imported_family(family: str):
    """A tiny random transformers Qwen2 (q/k/v biases, no qk-norm) or Llama (no qk-norm), untied head."""
    common = dict(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=128, max_position_embeddings=1024, initializer_range=0.2,
                  tie_word_embeddings=False, rope_theta=10000.0)
    torch.manual_seed(0)
    if family == "qwen2":
        return transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common)).eval()
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**common, head_dim=16)).eval()


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_qwen2_and_llama_directories_round_trip(tmp_path, family, kernels):
    theirs = imported_family(family)
    if family == "qwen2":                           # transformers initialises biases to 0: make them matter
        with torch.no_grad():
            for layer in theirs.model.layers:
                layer.self_attn.q_proj.bias.normal_(0, 0.5)
                layer.self_attn.k_proj.bias.normal_(0, 0.5)
                layer.self_attn.v_proj.bias.normal_(0, 0.5)
    theirs.save_pretrained(tmp_path / "hf")
    ours = load_model(tmp_path / "hf", device="cpu", kernels=kernels)
    assert (ours.config.qk_norm, ours.config.attention_bias) == (False, family == "qwen2")
    x = torch.randint(0, 512, (2, 40))
    with torch.no_grad():
        a, b = ours(x).logits, theirs(x).logits
    assert (a - b).abs().max() <= 1e-4 and a.std() > 0.5
    ours.save(tmp_path / "ours")                    # and back: saved under the same architecture
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours", dtype=torch.float32).eval()
    assert type(again) is type(theirs)
    with torch.no_grad():
        assert (again(x).logits - b).abs().max() <= 1e-5
