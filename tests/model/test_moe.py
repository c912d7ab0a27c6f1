import math

import pytest
import torch
import torch.nn.functional as F

from minimind import preset
from minimind.model.kernels import moe_padding, use_kernels
from minimind.model.kernels.moe_padding import cpu_group_block, expert_groups
from minimind.model.moe import GroupedMatmul, MoE


def make_moe(kernels: str = "reference", **overrides) -> MoE:
    torch.manual_seed(0)
    moe = MoE(preset("tiny-moe").replace(**overrides))
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return use_kernels(moe, kernels)


def test_aux_loss_hand_computed():
    """Two experts, top-1, three tokens with router logits chosen by hand."""
    moe = make_moe(num_experts=2, num_experts_per_tok=1, router_aux_loss_coef=0.01)
    with torch.no_grad():
        moe.gate.weight.zero_()
        moe.gate.weight[0, 0] = 1.0                      # logit of expert 0 = x[0], of expert 1 = 0
    x = torch.zeros(1, 3, 64)
    x[0, :, 0] = torch.tensor([2.0, 1.0, -1.0])
    _, aux = moe(x)
    p0 = [1 / (1 + math.exp(-a)) for a in (2.0, 1.0, -1.0)]          # softmax over (a, 0)
    f = [2 / 3, 1 / 3]                                               # tokens 1, 2 → expert 0; token 3 → expert 1
    P = [sum(p0) / 3, sum(1 - p for p in p0) / 3]
    expected = 2 * 0.01 * (f[0] * P[0] + f[1] * P[1])
    assert abs(aux.item() - expected) < 1e-7


def test_aux_loss_ignores_padding():
    moe = make_moe(router_aux_loss_coef=0.01)
    x = torch.randn(1, 6, 64)
    _, aux_masked = moe(x, token_mask=torch.tensor([[0, 0, 1, 1, 1, 1]]))
    _, aux_alone = moe(x[:, 2:])
    torch.testing.assert_close(aux_masked, aux_alone)


def test_uniform_routing_gives_k_times_coef():
    moe = make_moe(router_aux_loss_coef=0.01)               # 4 experts, top-2
    probs = torch.full((4, 4), 0.25)
    experts = torch.tensor([[0, 1], [2, 3], [0, 2], [1, 3]])
    assert abs(moe.aux_loss(probs, experts, None).item() - 2 * 0.01) < 1e-7


@pytest.mark.parametrize("autocast", [False, True])
def test_grouped_experts_equal_a_loop_over_tokens(kernels, autocast):
    """y_n = Σ_j w_nj · SwiGLU_e(x_n) token by token, in fp32 and (with padded groups under `auto`) in bf16."""
    moe = make_moe(kernels)
    x = torch.randn(2, 40, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        y, _ = moe(x)
    e = moe.experts
    for n, token in enumerate(x.reshape(-1, 64)):
        probs = F.softmax(moe.gate(token), dim=-1)
        w, idx = probs.topk(2)
        w = w / w.sum()
        ref = sum(wi * (F.silu(e.gate_proj[i] @ token) * (e.up_proj[i] @ token)) @ e.down_proj[i].T
                  for wi, i in zip(w, idx, strict=True))
        tolerance = dict(atol=0.05 * ref.abs().max().item(), rtol=0) if autocast else dict(atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(y.reshape(-1, 64)[n], ref, **tolerance)


def test_idle_expert_still_gets_a_gradient(kernels):
    """An expert no token picks gets a zero gradient, not None (DDP needs every parameter used)."""
    moe = make_moe(kernels, num_experts_per_tok=1)
    with torch.no_grad():
        moe.gate.weight.zero_()
        moe.gate.weight[0] = 1.0
    x = torch.rand(1, 4, 64) + 0.1                           # all positive → every token picks expert 0
    y, aux = moe(x)
    (y.sum() + aux).backward()
    assert moe.experts.down_proj.grad is not None
    assert moe.experts.down_proj.grad[1:].abs().sum() == 0 and moe.experts.down_proj.grad[0].abs().sum() > 0


def test_grouped_matmul_gradients_equal_per_group_matmuls():
    """GroupedMatmul's backward against autograd through one matmul per group, with an empty group."""
    torch.manual_seed(0)
    x = torch.randn(10, 16, requires_grad=True)
    w = torch.randn(3, 8, 16, requires_grad=True)
    sizes = [4, 0, 6]
    offsets = torch.tensor(sizes).cumsum(0).to(torch.int32)
    upstream = torch.randn(10, 8)
    (GroupedMatmul.apply(x, w, offsets) * upstream).sum().backward()
    got = x.grad.clone(), w.grad.clone()
    x.grad = w.grad = None
    ref = torch.cat([xg @ wg.T for xg, wg in zip(x.split(sizes), w.unbind(0), strict=True)])
    (ref * upstream).sum().backward()
    torch.testing.assert_close(got[0], x.grad)
    torch.testing.assert_close(got[1], w.grad)
    assert w.grad[1].abs().sum() == 0


def test_experts_run_in_the_autocast_dtype():
    moe = make_moe()
    x = torch.randn(2, 5, 64)
    ref, _ = moe(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = moe(x)
        h = moe.experts(x.reshape(-1, 64), torch.tensor([3, 6, 8, 10], dtype=torch.int32))
    assert h.dtype == torch.bfloat16 and y.dtype == torch.float32
    assert (y - ref).norm() < 0.05 * ref.norm()          # bf16 rounding (and the odd bf16 router flip)


def test_expert_groups_pad_each_group_to_the_block():
    grouped = torch.tensor([0, 0, 0, 2, 2, 3, 3, 3, 3, 3])     # expert 1 idle
    offsets, slots = expert_groups(grouped, 4, block=4)
    assert offsets.tolist() == [4, 4, 8, 16]
    assert slots.tolist() == [0, 1, 2, 4, 5, 8, 9, 10, 11, 12]
    packed, same = expert_groups(grouped, 4, block=1)
    assert packed.tolist() == [3, 3, 5, 10] and same.tolist() == list(range(10))


def test_cpu_group_block_keeps_padding_under_an_eighth_of_the_rows():
    assert cpu_group_block(4096, 4) == 128            # minimind-3-moe, 8 × 512 tokens, top-1
    assert cpu_group_block(4095, 4) == 64
    assert cpu_group_block(512, 4) == 16
    assert cpu_group_block(16, 4) == 1                # decoding 16 sequences: no padding


def test_padded_bf16_groups_give_the_packed_result_and_gradients(monkeypatch):
    """On the CPU under bf16 autocast `PaddedMoE` pads the groups with zero rows (CPU_GROUP_BLOCK): outputs and
    gradients match the reference's packed groups."""
    results = []
    for block, kernels in ((8, "auto"), (1, "reference")):   # 80 tokens, top-2, 4 experts: padded to blocks of 4
        monkeypatch.setattr(moe_padding, "CPU_GROUP_BLOCK", block)
        moe = make_moe(kernels)
        x = torch.randn(2, 40, 64, generator=torch.Generator().manual_seed(1), requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y, aux = moe(x)
        (y * torch.linspace(-1, 1, 64)).sum().backward()
        results.append((y.detach(), x.grad, moe.experts.gate_proj.grad, moe.experts.down_proj.grad))
    for padded, packed in zip(*results, strict=True):
        torch.testing.assert_close(padded, packed, atol=1e-2, rtol=1e-2)
    assert results[0][2].abs().sum() > 0
