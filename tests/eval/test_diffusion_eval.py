"""Evaluating a diffusion model: the ELBO scorer (exact where it must be, stable within its error across seeds), the
bound on bits per byte, multiple choice through the scorer and arithmetic through the sampler."""

import math

import torch

from minimind.eval.bpb import bits_per_byte
from minimind.eval.choice import Item, evaluate_choice
from minimind.eval.generative import evaluate_generative
from minimind.eval.scoring import DiffusionScorer, Scorer, scorer_for
from minimind.infer import DiffusionParams
from minimind.tokenizer import load_tokenizer
from tests.conftest import make_model

TEXT = ("The king speaks of love and war while the queen sings of night and day. " * 3).strip()


def test_one_token_continuations_are_scored_exactly():
    model, tokenizer = make_model(objective="diffusion"), load_tokenizer()
    scorer = DiffusionScorer(model, tokenizer, samples=4)
    context, token = [1, 200, 300, 400], 500
    (logp, greedy), = scorer.score([(context, [token])])
    logits = model(torch.tensor([context + [27]])).logits[0, -1]
    logits[27] = float("-inf")
    expected = logits.log_softmax(-1)[token].item()
    assert math.isclose(logp, expected, rel_tol=1e-5) and greedy == (logits.argmax().item() == token)


def test_the_bound_is_stable_across_seeds_within_its_error():
    model, tokenizer = make_model(objective="diffusion"), load_tokenizer()
    results = [bits_per_byte(DiffusionScorer(model, tokenizer, window=32, samples=16, seed=seed), [TEXT])
               for seed in (0, 1)]
    for r in results:
        assert r["bound"] and r["stderr"] > 0 and r["bpb"]["low"] < r["bpb"]["value"] < r["bpb"]["high"]
        assert r["bpb"]["value"] > 0
    a, b = results
    assert abs(a["bpb"]["value"] - b["bpb"]["value"]) < 4 * math.hypot(a["stderr"], b["stderr"])
    again = bits_per_byte(DiffusionScorer(model, tokenizer, window=32, samples=16, seed=0), [TEXT])
    assert again["bpb"]["value"] == a["bpb"]["value"]                 # a fixed seed repeats exactly


def test_scorer_for_picks_by_objective():
    tokenizer = load_tokenizer()
    assert type(scorer_for(make_model(), tokenizer)) is Scorer
    assert type(scorer_for(make_model(objective="diffusion"), tokenizer)) is DiffusionScorer


def test_choice_and_arithmetic_run_through_the_diffusion_scorer_and_sampler():
    model, tokenizer = make_model(objective="diffusion"), load_tokenizer()
    items = [Item("2 + 2 =", ["4", "5", "22"], 0), Item("The sky is", ["blue", "green"], 0)]
    r = evaluate_choice(DiffusionScorer(model, tokenizer, samples=4), items)
    assert r["n"] == 2 and 0 <= r["acc"]["value"] <= 1
    records = [{"messages": [{"role": "user", "content": "What is 2 + 3?"}], "answer": "5", "tools": []}]
    g = evaluate_generative(model, tokenizer, records, max_new_tokens=16,
                            diffusion=DiffusionParams(block_length=8, steps=4))
    assert g["n"] == 1 and g["length"] > 0 and "░" not in g["examples"][0]["output"][-1]
