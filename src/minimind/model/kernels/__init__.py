"""The fast paths beside the reference model, chosen in one place.

`use_kernels(model, "auto")` gives every module of a built model its fast class; `"reference"` gives back the
plain one. Each fast class is a subclass of the module it speeds up, with the same parameters and names, and falls
back to the plain computation wherever its own does not apply (another device, dtype or shape). Each file here
names the function it replaces and the measurement that justified it:

    norm_rope.py             RMSNorm (+ RoPE for q/k) with a hand-written backward; one cast per block input
    attention.py             which attention routine runs: flex, one-query, blocked matmuls or SDPA
    matmul_attention.py      bf16 CPU training attention in blocks of query rows, hand-written backward
    decode_attention.py      one query per row over the cache, two batched matmuls
    flex_attention.py        packed rows on a GPU: BlockMask + compiled flex attention
    linear_cross_entropy.py  LM head + cross-entropy in row chunks, gradients formed in forward
    moe_padding.py           expert groups padded for oneDNN
    one_row.py               one compiled CPU row: products as multiply-reduces (Linear, MoE experts)
    few_rows.py              1–64 fp32 (1–6 bf16) CPU decode rows: a packed-weight AVX-512 kernel (Linear, MoE)
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from minimind.config import KERNELS
from minimind.errors import MiniMindError
from minimind.model.kernels.attention import FastAttention
from minimind.model.kernels.few_rows import FewRowsLinear, FewRowsMoE
from minimind.model.kernels.flex_attention import FlexBackbone
from minimind.model.kernels.linear_cross_entropy import FusedLossTransformer, FusedLossVisionLanguageModel
from minimind.model.kernels.norm_rope import CastOnceBlock, FusedRMSNorm
from minimind.model.layers import Attention, Linear, RMSNorm
from minimind.model.moe import MoE
from minimind.model.transformer import Backbone, Block, Transformer
from minimind.model.vlm import VisionLanguageModel

Kernels = Literal[KERNELS]                        # the type of a kernels setting, from the one list
FAST = {Linear: FewRowsLinear, RMSNorm: FusedRMSNorm, Attention: FastAttention, Block: CastOnceBlock, MoE: FewRowsMoE,
        Backbone: FlexBackbone, Transformer: FusedLossTransformer, VisionLanguageModel: FusedLossVisionLanguageModel}
REFERENCE = {fast: plain for plain, fast in FAST.items()}


def use_kernels(model: nn.Module, kernels: str) -> nn.Module:
    """Switch every module of `model` (in place) to its fast class (`auto`) or its plain one (`reference`);
    returns the model. Call it before wrapping the model (DDP, FSDP, torch.compile, activation checkpointing)."""
    if kernels not in KERNELS:
        raise MiniMindError(f"kernels must be one of {', '.join(KERNELS)}; got {kernels!r}")
    table = FAST if kernels == "auto" else REFERENCE
    for module in model.modules():
        module.__class__ = table.get(type(module), type(module))
    return model


def kernels_of(model: nn.Module) -> str:
    """"auto" when any module of `model` runs a fast class, else "reference"."""
    return "auto" if any(type(m) in REFERENCE for m in model.modules()) else "reference"
