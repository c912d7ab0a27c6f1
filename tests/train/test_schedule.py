import math

import pytest
import torch

from minimind.errors import MiniMindError
from minimind.train.schedule import lr_multiplier, set_lr

W, T, FLOOR = 10, 111, 0.1      # decay phase: steps 10..110, midpoint 60


def curve(decay: str, total: int = T, warmup: int = W) -> list[float]:
    return [lr_multiplier(s, total, warmup, decay, FLOOR) for s in range(total)]


@pytest.mark.parametrize("decay", ["cosine", "linear", "constant"])
def test_key_points(decay):
    m = curve(decay)
    assert m[0] == pytest.approx(1 / W)
    assert m[W - 1] == m[W] == 1.0
    assert m[60] == pytest.approx({"cosine": 0.55, "linear": 0.55, "constant": 1.0}[decay])
    assert m[T - 1] == pytest.approx(1.0 if decay == "constant" else FLOOR)
    assert lr_multiplier(T + 50, T, W, decay, FLOOR) == m[T - 1]


def test_cosine_and_linear_shapes():
    at = W + 25        # a quarter of the way through the decay
    assert lr_multiplier(at, T, W, "cosine", FLOOR) == pytest.approx(FLOOR + (1 - FLOOR) * (1 + math.sqrt(0.5)) / 2)
    assert lr_multiplier(at, T, W, "linear", FLOOR) == pytest.approx(FLOOR + (1 - FLOOR) * 0.75)


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_monotonic_with_floor(decay):
    m = curve(decay)
    assert all(a < b for a, b in zip(m[:W - 1], m[1:W], strict=True))
    assert all(a >= b for a, b in zip(m[W:-1], m[W + 1:], strict=True))
    assert min(m) > 0 and min(m[W:]) >= FLOOR - 1e-12


@pytest.mark.parametrize("decay", ["cosine", "linear", "constant"])
def test_total_within_warmup(decay):
    assert curve(decay, total=5) == pytest.approx([(s + 1) / W for s in range(5)])
    assert curve(decay, total=W) == pytest.approx([(s + 1) / W for s in range(W)])
    assert lr_multiplier(0, 1, 0, decay, FLOOR) == 1.0      # no warmup, one step
    assert lr_multiplier(0, 0, 0, decay, FLOOR) == 1.0


def test_unknown_decay():
    with pytest.raises(MiniMindError, match="step"):
        lr_multiplier(50, T, W, "step", FLOOR)


def test_set_lr():
    p, q = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    optimizers = [torch.optim.AdamW([{"params": [p], "base_lr": 1e-3}]),
                  torch.optim.SGD([{"params": [q], "base_lr": 0.02}], lr=0.02)]
    set_lr(optimizers, 0.5)
    assert [g["lr"] for o in optimizers for g in o.param_groups] == [5e-4, 0.01]
