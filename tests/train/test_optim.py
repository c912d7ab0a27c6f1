import copy

import pytest
import torch

from minimind.errors import MiniMindError
from minimind.train.config import OptimConfig
from minimind.train.optim import Muon, build_optimizers, orthogonalize
from minimind.train.schedule import lr_multiplier, set_lr
from tests.conftest import make_model

MODELS = [("tiny", True), ("tiny", False), ("tiny-moe", True), ("tiny-moe", False)]   # (preset, tied head)


def batch(vocab: int, seed: int) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 16), generator=torch.Generator().manual_seed(seed))


def train_step(model, optimizers, ids) -> float:
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    loss = model(ids, labels=ids).loss
    loss.backward()
    for optimizer in optimizers:
        optimizer.step()
    return loss.item()


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
@pytest.mark.parametrize("name,tied", MODELS)
def test_groups_cover_every_parameter_once(name, tied, optimizer):
    model = make_model(name, tie_word_embeddings=tied)
    cfg = OptimConfig(optimizer=optimizer)
    optimizers = build_optimizers(model, cfg, "cpu")
    groups = [g for o in optimizers for g in o.param_groups]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}

    embedding = model.model.embed_tokens.weight
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(p) for p in model.parameters() if p.ndim >= 2 and p is not embedding}
    assert all(g["weight_decay"] in (0.0, cfg.weight_decay) for g in groups)
    assert (model.lm_head.weight is embedding) == tied

    assert isinstance(optimizers[0], torch.optim.AdamW) and optimizers[0].defaults["fused"]
    assert all(g["base_lr"] == cfg.lr for g in optimizers[0].param_groups)
    if optimizer == "muon":
        muon = optimizers[1]
        assert isinstance(muon, Muon) and all(g["base_lr"] == cfg.muon_lr for g in muon.param_groups)
        hidden = {id(p) for p in model.model.layers.parameters() if p.ndim >= 2}
        assert {id(p) for g in muon.param_groups for p in g["params"]} == hidden
    else:
        assert len(optimizers) == 1


def test_adamw_matches_reference():
    cfg = OptimConfig(lr=1e-2, weight_decay=0.1, beta1=0.8, beta2=0.9, eps=1e-6)
    model = make_model("tiny-moe", tie_word_embeddings=False)
    ref = copy.deepcopy(model)
    named = dict(ref.named_parameters())
    decay = [p for n, p in named.items() if p.ndim >= 2 and n != "model.embed_tokens.weight"]
    rest = [p for n, p in named.items() if p.ndim < 2 or n == "model.embed_tokens.weight"]
    reference = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                                  lr=1e-2, betas=(0.8, 0.9), eps=1e-6, foreach=False)
    optimizers = build_optimizers(model, cfg, "cpu")
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):      # the same gradients for both (a forward pass would amplify rounding differences)
        for p, q in zip(model.parameters(), ref.parameters(), strict=True):
            p.grad = torch.randn(p.shape, generator=generator)
            q.grad = p.grad.clone()
        optimizers[0].step()
        reference.step()
    for (name, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, msg=name)


@pytest.mark.parametrize("shape", [(48, 128), (128, 48), (3, 96, 32)])
def test_orthogonalize_singular_values(shape):
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    O = orthogonalize(G)
    assert O.shape == G.shape and O.dtype == torch.float32
    s = torch.linalg.svdvals(O)
    assert s.min() > 0.5 and s.max() < 1.5
    if G.ndim == 3:     # a stack is orthogonalised matrix by matrix
        torch.testing.assert_close(O, torch.stack([orthogonalize(g) for g in G]))


@pytest.mark.parametrize("name", ["tiny", "tiny-moe"])
def test_muon_reduces_loss(name):
    model = make_model(name)
    adamw, muon = build_optimizers(model, OptimConfig(optimizer="muon"), "cpu")
    ids = batch(model.config.vocab_size, 0)
    losses = [train_step(model, [muon], ids) for _ in range(6)]     # Muon alone: the hidden matrices
    assert losses[-1] < 0.5 * losses[0], losses


def test_muon_rejects_vectors():
    with pytest.raises(ValueError, match="matrices"):
        Muon([torch.nn.Parameter(torch.zeros(4))])


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_state_dict_round_trip_resumes_exactly(optimizer):
    cfg = OptimConfig(optimizer=optimizer, warmup_steps=2)

    def run(model, optimizers, steps):
        for step in steps:
            set_lr(optimizers, lr_multiplier(step, 10, cfg.warmup_steps, cfg.decay, cfg.min_lr_ratio))
            train_step(model, optimizers, batch(model.config.vocab_size, step))

    model = make_model("tiny-moe")
    optimizers = build_optimizers(model, cfg, "cpu")
    run(model, optimizers, range(3))
    saved = copy.deepcopy((model.state_dict(), [o.state_dict() for o in optimizers]))
    run(model, optimizers, range(3, 5))

    resumed = make_model("tiny-moe", seed=1)
    resumed.load_state_dict(saved[0])
    resumed_optimizers = build_optimizers(resumed, cfg, "cpu")
    for o, state in zip(resumed_optimizers, saved[1], strict=True):
        o.load_state_dict(state)
    run(resumed, resumed_optimizers, range(3, 5))
    for (name, p), q in zip(model.named_parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)


def test_unknown_optimizer():
    with pytest.raises(MiniMindError, match="optim.optimizer"):
        build_optimizers(make_model("tiny"), OptimConfig(optimizer="sgd"), "cpu")
