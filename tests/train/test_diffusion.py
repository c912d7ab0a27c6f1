"""Masked diffusion: the bidirectional model, the loss against a hand computation, the stage through the trainer."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from minimind.errors import MiniMindError
from minimind.model import load_model
from minimind.model.loss import IGNORE_INDEX
from minimind.train.diffusion import DiffusionTrainConfig, MaskedDiffusion, add_noise, as_diffusion, masked_losses
from minimind.train.trainer import train
from tests.conftest import assert_packed_rows_equal_each_document_alone, make_model
from tests.train.test_trainer import config, data, metrics  # noqa: F401 — the trainer tests' data fixture

MASK = 27


def test_changing_a_later_token_changes_earlier_logits_only_when_bidirectional(kernels):
    ids = torch.randint(30, 400, (1, 12))
    later = ids.clone()
    later[0, 10] = 7
    for objective, changes in (("causal", False), ("diffusion", True)):
        model = make_model(kernels=kernels, objective=objective)
        first, second = model(ids).logits, model(later).logits
        assert (not torch.allclose(first[0, :10], second[0, :10], atol=1e-6)) == changes


def test_packed_documents_do_not_see_each_other(kernels):
    model = make_model(kernels=kernels, objective="diffusion")
    packed, positions, together = assert_packed_rows_equal_each_document_alone(model, (7, 5))
    changed = packed.clone()
    changed[0, 9] = 3                                        # a token of the second document
    torch.testing.assert_close(model(changed, position_ids=positions).logits[:, :7], together[:, :7])


def test_padding_is_invisible_to_a_bidirectional_model():
    model = make_model(objective="diffusion")
    ids = torch.randint(30, 400, (1, 6))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], 1)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1]])
    torch.testing.assert_close(model(padded, attention_mask=mask).logits[:, 3:], model(ids).logits,
                               atol=1e-5, rtol=1e-5)


def test_the_loss_with_t_fixed_equals_a_hand_computation():
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    eligible = torch.tensor([[False, True, True, True, True, False]])
    positions = torch.arange(6)[None]
    generator = torch.Generator().manual_seed(3)
    noisy, noised, p = add_noise(ids, eligible, positions, MASK, 1e-3, generator)
    t = torch.rand((1, 6), generator=torch.Generator().manual_seed(3))[0, 0]      # one document: its t
    assert torch.allclose(p, torch.full_like(p, (1 - 1e-3) * t + 1e-3))
    assert not noised[~eligible].any() and torch.equal(noisy[~noised], ids[~noised])
    assert (noisy[noised] == MASK).all()
    logits = torch.randn(1, 6, 50)
    losses = masked_losses(logits, ids, noised, p)
    expected = sum(-F.log_softmax(logits[0, i], -1)[ids[0, i]] / p[0, i] for i in range(6) if noised[0, i])
    assert math.isclose(losses.sum().item(), float(expected), rel_tol=1e-6)
    assert (losses[~noised] == 0).all()
    clean = torch.zeros_like(noised)                                  # a fully unmasked input: nothing to predict
    assert masked_losses(logits, ids, clean, p).sum().item() == 0.0


def test_each_document_draws_its_own_t():
    ids = torch.full((1, 8), 5)
    positions = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3]])
    _, _, p = add_noise(ids, torch.ones_like(ids, dtype=torch.bool), positions, MASK, 1e-3)
    assert len(set(p[0, :4].tolist())) == 1 and len(set(p[0, 4:].tolist())) == 1 and p[0, 0] != p[0, 4]


def test_a_batch_without_targets_contributes_zero_not_nan():
    stage = MaskedDiffusion(None, DiffusionTrainConfig())
    model = make_model(objective="diffusion").train()
    batch = {"input_ids": torch.randint(30, 400, (2, 8)), "labels": torch.full((2, 8), IGNORE_INDEX),
             "position_ids": torch.arange(8).repeat(2, 1)}
    loss = stage.loss(model, batch)
    assert stage.count(batch) == 0 and loss.total.item() == 0.0
    (loss.total / stage.count(batch).clamp(min=1)).backward()          # as the trainer divides: finite, zero
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_a_causal_model_becomes_a_diffusion_model_with_the_same_weights():
    causal = make_model()
    model = as_diffusion(causal, MASK)
    assert model.config.is_diffusion and model.config.mask_token_id == MASK and not model.model.causal
    for (name, a), (_, b) in zip(causal.state_dict().items(), model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_objective_is_refused_where_no_stage_trains_with_it(data, tmp_path):  # noqa: F811
    with pytest.raises(MiniMindError, match="objective"):
        config(data, tmp_path / "x", stage="dpo", objective="diffusion")


def test_diffusion_pretraining_learns_saves_and_reloads_as_diffusion(data, tmp_path):  # noqa: F811
    out = tmp_path / "dlm"
    model_dir = train(config(data, out, objective="diffusion", max_steps=30, eval_every=30,
                             data={"train": [str(data / "pretrain.jsonl")], "val": [str(data / "val.jsonl")],
                                   "seq_len": 32, "prepared": str(data / "prepared")}))
    val = metrics(out, "val")
    assert val[-1]["loss"] < val[0]["loss"] - 1.0 and 0 < val[-1]["bpb_bound"] < val[0]["bpb_bound"]
    saved = json.loads((model_dir / "config.json").read_text())
    assert saved["model_type"] == "minimind_dlm" and saved["architectures"] == ["MiniMindDiffusionLM"]
    assert saved["objective"] == "diffusion" and saved["mask_token_id"] == MASK
    assert saved["decoder_model_type"] == "qwen3"
    model = load_model(model_dir, device="cpu")
    assert model.config.is_diffusion and not model.model.causal
    transformers = pytest.importorskip("transformers")
    with pytest.raises(ValueError, match="minimind_dlm"):          # never read as a causal Qwen3
        transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    with pytest.raises(MiniMindError, match="diffusion model"):        # a causal stage refuses it
        train(config(data, tmp_path / "again", model=str(model_dir), max_steps=1))
    resumed = train(config(data, tmp_path / "more", model=str(model_dir), objective="diffusion", max_steps=2))
    assert load_model(resumed, device="cpu").config.is_diffusion


def test_diffusion_sft_never_noises_the_prompt():
    stage = MaskedDiffusion(None, DiffusionTrainConfig())
    model = make_model(objective="diffusion")
    ids = torch.randint(30, 400, (1, 10))
    labels = torch.where(torch.arange(10) >= 6, ids, IGNORE_INDEX)
    seen = []
    original = model.forward
    model.forward = lambda x, **kw: (seen.append(x.clone()), original(x, **kw))[1]
    for _ in range(20):
        stage.loss(model, {"input_ids": ids, "labels": labels, "position_ids": torch.arange(10)[None]})
    assert all(torch.equal(x[0, :6], ids[0, :6]) for x in seen)
    assert any((x[0, 6:] == MASK).any() for x in seen)
