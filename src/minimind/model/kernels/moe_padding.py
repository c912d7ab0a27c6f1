"""MoE expert groups padded with zero rows for oneDNN (bf16 and fp16 GEMMs on the CPU), and one decoded token's
experts as multiply-reduces under torch.compile.

Replaces `MoE.run_experts` for one compiled CPU token, and `MoE.grouped_experts` on oneDNN. Justified by:
oneDNN builds (JIT-compiles) a kernel for every new matrix shape, and expert group sizes change every step; ten
grouped GEMMs over fresh group sizes missed its cache on 35–39 of 40 kernel creations, with padding on 1. The bf16
MoE step ran 1.17–1.27× faster and its peak memory fell from 7.5–8.1 to 6.0–6.6 GiB on the Zen 5 machine
(docs/performance.md, "MoE groups padded for oneDNN"). fp32 GEMMs do not go through oneDNN and are not padded.
"""

from __future__ import annotations

import torch

from minimind.model.kernels.one_row import one_compiled_cpu_row, one_token_experts
from minimind.model.layers import autocast_dtype
from minimind.model.moe import MoE

CPU_GROUP_BLOCK = 128


def cpu_group_block(rows: int, num_experts: int) -> int:
    """The padding block for `rows` assignments over `num_experts` groups: the largest power of two up to
    CPU_GROUP_BLOCK that is at most 1/8 of the average group, so padding adds at most 1/8 to the rows (about
    1/16 on average), and 1 (no padding) for a few tokens, as in decoding."""
    block = CPU_GROUP_BLOCK
    while block > 1 and rows < 8 * num_experts * block:
        block //= 2
    return block


def expert_groups(grouped: torch.Tensor, num_experts: int, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each expert's rows go when every group is padded to a multiple of `block` rows, for grouped [M] expert
    ids in ascending order → (offsets [E] int32, the end row of each padded group; slots [M], the row of each
    assignment). At most M + E·(block − 1) rows in all; computed on the device, without a host sync."""
    ids = torch.arange(num_experts, device=grouped.device, dtype=grouped.dtype)
    ends = torch.searchsorted(grouped, ids, right=True)
    counts = ends.diff(prepend=ends.new_zeros(1))
    padded = (counts + block - 1) // block * block
    padded_ends = padded.cumsum(0)
    slots = torch.arange(grouped.shape[0], device=grouped.device) - (ends - counts)[grouped] \
        + (padded_ends - padded)[grouped]
    return padded_ends.to(torch.int32), slots


class PaddedMoE(MoE):
    """`MoE` whose expert groups are padded on oneDNN, and whose one compiled CPU token reads only its experts."""

    def run_experts(self, x: torch.Tensor, experts: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if one_compiled_cpu_row(x):
            return one_token_experts(self.experts, x, experts[0], weights[0]).to(x.dtype)
        return super().run_experts(x, experts, weights)

    def grouped_experts(self, rows: torch.Tensor, grouped: torch.Tensor) -> torch.Tensor:
        on_onednn = rows.device.type == "cpu" and autocast_dtype(rows) != torch.float32
        block = cpu_group_block(rows.shape[0], self.num_experts) if on_onednn else 1
        if block == 1:
            return super().grouped_experts(rows, grouped)
        offsets, slots = expert_groups(grouped, self.num_experts, block)
        padded = rows.new_zeros(rows.shape[0] + self.num_experts * (block - 1), rows.shape[1])
        return self.experts(padded.index_copy(0, slots, rows), offsets).index_select(0, slots)
