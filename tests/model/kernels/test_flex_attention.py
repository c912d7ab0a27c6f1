"""Packed rows through flex attention (the GPU path; forward checked on the CPU) against the dense document mask."""

import pytest
import torch

from minimind.model.kernels import flex_attention
from minimind.model.kernels.flex_attention import document_block_mask
from minimind.model.transformer import checkpoint_blocks
from tests.conftest import make_model
from tests.model.test_model import packed_positions


def test_document_block_mask_equals_the_dense_document_mask():
    """The flex-attention mask of packed rows (the GPU path) allows exactly the pairs the dense mask does, and
    skips the 128 × 128 tiles that lie wholly across documents."""
    positions = packed_positions((100, 200, 1, 99), (256, 144))
    dense = make_model(kernels="reference").model.document_mask(positions)      # [B, 1, T, T]
    block_mask = document_block_mask(positions)
    assert block_mask.shape == (2, 1, 400, 400)
    mask_mod = block_mask.mask_mod
    b, q, k = torch.meshgrid(torch.arange(2), torch.arange(400), torch.arange(400), indexing="ij")
    assert torch.equal(mask_mod(b, torch.zeros_like(b), q, k), dense[:, 0])
    # row 1: documents [0, 256) and [256, 400); the tile of queries 256–383 × keys 0–127 is skipped
    tiles = block_mask.to_dense()[1, 0]
    assert tiles[2, 0] == 0 and tiles[2, 2] == 1 and tiles[0, 1] == 0


@torch.no_grad()
def test_packed_rows_through_flex_attention_equal_the_dense_mask(monkeypatch):
    """The model's GPU path for packed rows, run on the CPU (flex attention has no CPU backward, so forward
    only): the logits equal those of the dense document mask, for a dense and an MoE model, with GQA."""
    positions = packed_positions((20, 50, 30), (64, 36))
    for name in ("tiny", "tiny-moe"):
        model = make_model(name)
        ids = torch.randint(3, 6400, positions.shape)
        dense = model(ids, position_ids=positions).logits
        monkeypatch.setattr(flex_attention, "FLEX_ATTENTION_DEVICES", {"cpu"})
        flex = model(ids, position_ids=positions).logits
        monkeypatch.undo()
        torch.testing.assert_close(flex, dense, atol=2e-5, rtol=2e-5)


@pytest.mark.slow
@torch.no_grad()
def test_compiled_model_traces_the_block_mask_and_flex_attention(monkeypatch):
    """compile=true on a GPU compiles the whole model: building the BlockMask and flex attention trace in one graph
    (fullgraph), checked here on the CPU, forward only; the logits equal the eager dense-mask ones."""
    positions = packed_positions((20, 50, 30), (64, 36))
    model = make_model()
    ids = torch.randint(3, 6400, positions.shape)
    dense = model(ids, position_ids=positions).logits
    monkeypatch.setattr(flex_attention, "FLEX_ATTENTION_DEVICES", {"cpu"})
    flex = torch.compile(model, fullgraph=True)(ids, position_ids=positions).logits
    torch.testing.assert_close(flex, dense, atol=2e-5, rtol=2e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flex attention's backward runs on a GPU only")
@pytest.mark.parametrize("checkpointing", [False, True])
def test_flex_attention_gradients_equal_the_dense_mask_on_cuda(monkeypatch, checkpointing):
    """On CUDA, packed rows take flex attention; loss and gradients equal SDPA with the dense document mask, also
    with activation checkpointing (the BlockMask passes through `checkpoint` into every block)."""
    positions = packed_positions((300, 212), (512,)).cuda()
    model = make_model().cuda().train()
    if checkpointing:
        checkpoint_blocks(model)
    ids = torch.randint(3, 6400, positions.shape, device="cuda")
    results = []
    for devices in ({"cuda"}, set()):
        monkeypatch.setattr(flex_attention, "FLEX_ATTENTION_DEVICES", devices)
        model.zero_grad()
        loss = model(ids, labels=ids, position_ids=positions).loss
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (loss_flex, grads_flex), (loss_dense, grads_dense) = results
    torch.testing.assert_close(loss_flex, loss_dense, atol=1e-4, rtol=1e-4)
    for a, b in zip(grads_flex, grads_dense, strict=True):
        torch.testing.assert_close(a, b, atol=1e-3 * b.abs().max().item(), rtol=0)
