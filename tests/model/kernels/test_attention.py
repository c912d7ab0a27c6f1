"""The attention fast paths against SDPA, the reference's attention: decoding's one query, training's blocked
matmuls (values and gradients in float64), the routing between them, and the compiled bf16 step."""

import pytest
import torch
import torch.nn.functional as F

from minimind.model.kernels import matmul_attention as blocked
from minimind.model.kernels.decode_attention import single_query_attention
from minimind.model.kernels.matmul_attention import first_key_block, matmul_attention
from tests.conftest import make_model


@pytest.mark.parametrize("mask_rows", [0, 1, 3])
def test_single_query_attention_equals_sdpa(mask_rows):
    """Decoding's attention path: grouped heads, a per-row key mask (or one shared row, or none), fp32 softmax."""
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 4, 1, 16), torch.randn(3, 2, 9, 16), torch.randn(3, 2, 9, 16)
    mask = torch.rand(mask_rows, 1, 1, 9) > 0.4 if mask_rows else None
    if mask is not None:
        mask[..., -1] = True                                    # the row's own new key
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    torch.testing.assert_close(single_query_attention(q, k, v, mask), want)
    got = single_query_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("block", [128, 5])
@pytest.mark.parametrize("masked", ["causal", "documents"])
def test_matmul_attention_values_and_gradients_equal_sdpa(masked, block, monkeypatch):
    """Training's CPU bf16 attention, checked in float64 so that a wrong backward formula cannot hide in rounding:
    grouped heads (4 query heads on 2 key heads), a non-contiguous q as the model passes it, causal or per-row
    document masks, one block of query rows or blocks of 5 (the last one short) that see only earlier keys."""
    monkeypatch.setattr(blocked, "MATMUL_ATTENTION_BLOCK", block)
    torch.manual_seed(0)
    B, T = 2, 12
    q = torch.randn(B, T, 4, 8, dtype=torch.float64).transpose(1, 2).requires_grad_()
    k, v = (torch.randn(B, 2, T, 8, dtype=torch.float64, requires_grad=True) for _ in range(2))
    mask = None
    if masked == "documents":
        doc = torch.tensor([[0] * 5 + [1] * 7, [0] * 9 + [1] * 3])
        mask = (torch.ones(T, T, dtype=torch.bool).tril() & (doc[:, :, None] == doc[:, None, :]))[:, None]
    grad_out = torch.randn(B, 4, T, 8, dtype=torch.float64)
    results = []
    for attend in (lambda: matmul_attention(q, k, v, mask),
                   lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                                          enable_gqa=True)):
        out = attend()
        grads = torch.autograd.grad(out, (q, k, v), grad_out)
        results.append((out, *grads))
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


def test_a_block_of_query_rows_skips_the_key_blocks_before_its_documents(monkeypatch):
    monkeypatch.setattr(blocked, "MATMUL_ATTENTION_BLOCK", 4)
    doc = torch.tensor([[0] * 6 + [1] * 10, [0] * 11 + [1] * 5])            # documents start at 6 and 11
    allowed = (torch.ones(16, 16, dtype=torch.bool).tril() & (doc[:, :, None] == doc[:, None, :]))[:, None, None]
    assert first_key_block(allowed[..., 12:16, :16]) == 4                   # row 0 still sees key 6 → block 4
    assert first_key_block(allowed[1:, ..., 12:16, :16]) == 8               # row 1 alone: key 11 → block 8
    assert first_key_block(allowed[..., 0:4, :4]) == 0


def test_bf16_cpu_training_uses_matmul_attention_up_to_its_length(monkeypatch):
    """The model routes bf16 CPU attention without a cache through matmul_attention when T is at most
    MATMUL_ATTENTION_MAX_T, and through SDPA above it; both give the same loss and gradients within bf16."""
    model = make_model()
    x = torch.randint(0, 6400, (2, 16))
    calls = []
    monkeypatch.setattr(blocked, "matmul_attention",
                        lambda *args: calls.append(args[0].dtype) or matmul_attention(*args))
    results = []
    for max_t in (16, 15):
        monkeypatch.setattr(blocked, "MATMUL_ATTENTION_MAX_T", max_t)
        model.zero_grad()
        with torch.autocast("cpu", torch.bfloat16):
            loss = model(x, labels=x).loss
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    assert calls == [torch.bfloat16] * model.config.num_hidden_layers
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b, atol=2e-3, rtol=0)
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(a, b, atol=3e-2 * b.abs().max().item(), rtol=0)


def test_compiled_bf16_cpu_training_step_equals_eager():
    """torch.compile traces the CPU bf16 training path (matmul_attention's blocks, the norms' `norm_rope`):
    the same loss and gradients as eager, within bf16. One layer, to keep compilation short."""
    model = make_model(num_hidden_layers=1)
    x = torch.randint(0, 6400, (2, 16))
    results = []
    for forward in (model, torch.compile(model)):
        model.zero_grad()
        with torch.autocast("cpu", torch.bfloat16):
            loss = forward(x, labels=x).loss
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b, atol=1e-2, rtol=0)
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(a, b, atol=5e-2 * b.abs().max().item(), rtol=0)
