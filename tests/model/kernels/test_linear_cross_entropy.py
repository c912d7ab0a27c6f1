"""The fused, chunked LM-head cross-entropy against F.cross_entropy on full logits: value and gradients."""

import pytest
import torch
import torch.nn.functional as F

from minimind.model.kernels import linear_cross_entropy as fused
from minimind.model.kernels.linear_cross_entropy import linear_cross_entropy


@pytest.fixture
def inputs():
    torch.manual_seed(0)
    h = torch.randn(2, 150, 32, requires_grad=True)
    w = torch.randn(50, 32, requires_grad=True)
    y = torch.randint(50, (2, 150))
    y[:, ::7] = -100
    return h, w, y


@pytest.fixture(params=[50 * 64, 2**24], ids=["5 chunks", "1 chunk"])
def chunk(request, monkeypatch):
    monkeypatch.setattr(fused, "CHUNK_ELEMENTS", request.param)


def reference(h, w, y):
    return F.cross_entropy((h @ w.T).flatten(0, 1), y.flatten(), ignore_index=-100, reduction="sum")


def test_value_and_gradients_match_full_logits(inputs, chunk):
    h, w, y = inputs
    got = linear_cross_entropy(h, w, y)
    (3 * got).backward()                    # the incoming gradient scales the ones computed in forward
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    expected = reference(h, w, y)
    (3 * expected).backward()
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(gh, h.grad)
    torch.testing.assert_close(gw, w.grad)
    assert gh.abs().sum() > 0 and gw.abs().sum() > 0


def test_ignored_targets_get_no_gradient(inputs, chunk):
    h, w, y = inputs
    y[0] = -100
    linear_cross_entropy(h, w, y).backward()
    assert h.grad[0].abs().max() == 0 and h.grad[1].abs().max() > 0
    assert linear_cross_entropy(h, w, torch.full_like(y, -100)).item() == 0.0


def test_bf16_autocast_matches_autocast_reference(inputs):
    h, w, y = inputs
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = linear_cross_entropy(h, w, y)
        expected = F.cross_entropy((h @ w.T).float().flatten(0, 1), y.flatten(), reduction="sum")
    got.backward()
    assert w.grad.dtype == torch.float32 and h.grad.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=2e-3, atol=0)


def test_no_grad_computes_the_value_only(inputs):
    h, w, y = inputs
    with torch.no_grad():
        got = linear_cross_entropy(h, w, y)
    assert not got.requires_grad
    torch.testing.assert_close(got, reference(h, w, y).detach())
