"""The diffusion sampler: no [MASK] survives, blocks and steps, remasking, guidance, batching, the end of an answer."""

import pytest
import torch

from minimind.errors import MiniMindError
from minimind.infer import DiffusionEngine, DiffusionParams, Engine, SamplingParams, engine_for
from minimind.infer.diffusion import transfer_counts
from minimind.tokenizer import load_tokenizer
from tests.conftest import make_model

MASK = 27


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def biased_model(token: int = MASK):
    """A diffusion model whose favourite output everywhere is `token` (by default the [MASK] id itself)."""
    model = make_model(objective="diffusion")
    bonus = torch.zeros(model.config.vocab_size)
    bonus[token] = 100.0
    head = model.lm_head.forward
    model.lm_head.forward = lambda h: head(h) + bonus
    return model


def test_transfer_counts_split_the_block_evenly():
    assert transfer_counts(10, 4) == [3, 3, 2, 2]
    assert transfer_counts(3, 8) == [1, 1, 1]
    assert sum(transfer_counts(32, 5)) == 32


@pytest.mark.parametrize("remasking", ["low_confidence", "random"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_the_mask_token_never_appears_in_the_output(tokenizer, remasking, temperature):
    model = biased_model()
    assert model(torch.tensor([[5, 6, 7]])).logits[0].argmax(-1).eq(MASK).all()     # it would pick [MASK]
    engine = DiffusionEngine(model, tokenizer, DiffusionParams(block_length=8, steps=3, remasking=remasking))
    out = engine.generate([[1, 200, 300]], SamplingParams(max_new_tokens=20, temperature=temperature, seed=0,
                                                          ignore_eos=True))[0][0]
    assert len(out.token_ids) == 20 and MASK not in out.token_ids and out.finish_reason == "length"


def test_blocks_and_steps_run_as_configured(tokenizer):
    engine = DiffusionEngine(make_model(objective="diffusion"), tokenizer, DiffusionParams(block_length=8, steps=4))
    deltas = [d for (d,) in engine.stream([[1, 200, 300]], SamplingParams(max_new_tokens=20, temperature=0,
                                                                          ignore_eos=True))]
    # 20 tokens = blocks of 8, 8, 4; 4 steps each (the last block of 4 tokens needs 4 one-token steps)
    assert len(deltas) == 12
    assert [i for i, d in enumerate(deltas) if "░" not in d.canvas] == [3, 7, 11]      # the blocks' last steps
    assert deltas[-1].finish_reason == "length" and all(d.text == "" for d in deltas if "░" in d.canvas)
    canvases = [d.canvas for d in deltas[:4]]
    assert [c.count("░") for c in canvases] == [6, 4, 2, 0]              # 2 tokens unmasked per step


def test_a_batch_equals_each_prompt_alone(tokenizer):
    engine = DiffusionEngine(make_model(objective="diffusion"), tokenizer, DiffusionParams(block_length=6, steps=3))
    prompts = [[1, 200, 300, 301, 302], [1, 250]]
    params = SamplingParams(max_new_tokens=12, temperature=0.8, seed=7, ignore_eos=True)
    together = engine.generate(prompts, params)
    for prompt, out in zip(prompts, together, strict=True):
        assert engine.generate([prompt], params)[0][0].token_ids == out[0].token_ids


def test_guidance_changes_the_answer_and_seeds_repeat(tokenizer):
    model = make_model(objective="diffusion")
    params = SamplingParams(max_new_tokens=16, temperature=0, ignore_eos=True)
    plain = DiffusionEngine(model, tokenizer, DiffusionParams(block_length=8, steps=8)).generate([[1, 200, 300]],
                                                                                               params)[0][0]
    guided = DiffusionEngine(model, tokenizer, DiffusionParams(block_length=8, steps=8, cfg_scale=3.0)).generate(
        [[1, 200, 300]], params)[0][0]
    assert plain.token_ids != guided.token_ids
    sampled = DiffusionEngine(model, tokenizer, DiffusionParams(block_length=8, steps=8, remasking="random"))
    seeded = SamplingParams(max_new_tokens=16, temperature=1.0, seed=3, ignore_eos=True)
    assert sampled.generate([[1, 9]], seeded)[0][0].token_ids == sampled.generate([[1, 9]], seeded)[0][0].token_ids


def test_an_end_token_ends_the_answer(tokenizer):
    model = biased_model(token=tokenizer.eos_id)
    out = DiffusionEngine(model, tokenizer, DiffusionParams(block_length=8, steps=8)).generate(
        [[1, 200]], SamplingParams(max_new_tokens=30, temperature=0))[0][0]
    assert out.finish_reason == "stop" and out.token_ids[-1] == tokenizer.eos_id and len(out.token_ids) <= 8


def test_the_engines_refuse_each_others_models_and_what_diffusion_cannot_do(tokenizer):
    with pytest.raises(MiniMindError, match="DiffusionEngine"):
        Engine(make_model(objective="diffusion"), tokenizer)
    with pytest.raises(MiniMindError, match="causal"):
        DiffusionEngine(make_model(), tokenizer)
    assert isinstance(engine_for(make_model(objective="diffusion"), tokenizer), DiffusionEngine)
    engine = DiffusionEngine(make_model(objective="diffusion"), tokenizer)
    with pytest.raises(MiniMindError, match="log-probabilities"):
        engine.generate([[1, 2]], SamplingParams(logprobs=2))
    with pytest.raises(MiniMindError, match="penalties"):
        engine.generate([[1, 2]], SamplingParams(repetition_penalty=1.2))
    with pytest.raises(MiniMindError, match=r"\[MASK\]"):
        engine.generate([[1, MASK, 2]], SamplingParams())
    with pytest.raises(ValueError, match="KV cache"):
        from minimind.model.cache import KVCache

        model = engine.model
        model(torch.tensor([[1, 2]]), cache=KVCache(model.config, 1, 8))
