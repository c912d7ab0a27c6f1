"""Weight-only quantization for CPU inference: int8 per output row, or int4 in groups along the input.

    int8   s_o = max_i |W_oi| / 127,  q_oi = round(W_oi / s_o) ∈ [-127, 127],          W ≈ q · s
    int4   per group g of `group` inputs of row o:  lo, hi = min, max of W_o,g
           s = (hi − lo) / 15,  q = round((W − lo) / s) ∈ [0, 15],                  W ≈ (q − 8) · s + z,  z = lo + 8s

y = x · Ŵᵀ with activations in fp32. The products run in PyTorch's own weight-only kernels
(`torch._weight_int8pack_mm`, `torch._weight_int4pack_mm_for_cpu`, those gpt-fast and torchao use), which read a
quarter (int8) or an eighth plus the group scales (int4) of the fp32 weight bytes; decoding one token is a pass
over the weights, so that is where the speed comes from. The tied embedding lookup stays fp32; the LM head gets
its own quantized copy. MoE experts (stacked, not Linear) and the router stay fp32.
"""

from __future__ import annotations

import torch
from torch import nn

from minimind.errors import MiniMindError
from minimind.model.layers import Linear
from minimind.model.transformer import Transformer

QUANT = ("int8", "int4")
INT4_GROUP = 32                  # inputs per int4 scale; 32 keeps the quickstart model's bits per byte within 1%


class Int8Linear(nn.Module):
    """A Linear with int8 weights [out, in] and fp32 per-row scales [out]."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach().float()
        scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
        self.register_buffer("weight", (w / scales[:, None]).round().clamp(-127, 127).to(torch.int8))
        self.register_buffer("scales", scales)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == x.shape[-1] and torch.compiler.is_compiling():
            # one decoded row under torch.compile: a multiply-reduce that Inductor fuses into one loop reading
            # the int8 weights (as the one-row kernel of `Linear` does for fp32)
            y = (x[..., None, :].float() * self.weight).sum(-1) * self.scales
        else:
            y = torch._weight_int8pack_mm(x.reshape(-1, self.in_features).float(), self.weight, self.scales)
        return y.view(*x.shape[:-1], self.out_features).to(x.dtype)


class Int4Linear(nn.Module):
    """A Linear with int4 weights in groups of `group` inputs: packed for the CPU kernel, and per group an fp32
    scale and offset, `scales_and_zeros` [in / group, out, 2]."""

    def __init__(self, linear: nn.Linear, group: int = INT4_GROUP):
        super().__init__()
        w = linear.weight.detach().float()
        out_features, in_features = w.shape
        groups = w.reshape(out_features, in_features // group, group)
        lo, hi = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
        scale = ((hi - lo) / 15).clamp(min=1e-12)
        q = ((groups - lo) / scale).round().clamp(0, 15).to(torch.int32).reshape(out_features, in_features)
        self.register_buffer("weight", torch._convert_weight_to_int4pack_for_cpu(q, 1))
        zero = lo + 8 * scale
        self.register_buffer("scales_and_zeros", torch.cat([scale, zero], -1).transpose(0, 1).contiguous())
        self.in_features, self.out_features, self.group = in_features, out_features, group

    def dequantized(self) -> torch.Tensor:
        """Ŵ [out, in] in fp32: what the kernel multiplies by (for tests and inspection)."""
        eye = torch.eye(self.in_features)
        return torch._weight_int4pack_mm_for_cpu(eye, self.weight, self.group, self.scales_and_zeros).T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch._weight_int4pack_mm_for_cpu(x.reshape(-1, self.in_features).float().contiguous(), self.weight,
                                              self.group, self.scales_and_zeros)
        return y.view(*x.shape[:-1], self.out_features).to(x.dtype)


def quantize(model: Transformer, kind: str, group: int = INT4_GROUP) -> Transformer:
    """Replace every Linear of `model` (CPU, fp32, LoRA merged) by its int8 or int4 form, in place; returns it."""
    if kind not in QUANT:
        raise MiniMindError(f"quantization must be one of {', '.join(QUANT)}; got {kind!r}")
    if next(model.parameters()).device.type != "cpu":
        raise MiniMindError(f"{kind} weight quantization is for CPU inference (--device cpu)")
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, Linear):
                if child.lora_A is not None:
                    raise MiniMindError("merge the LoRA adapter before quantizing (minimind lora merge)")
                if kind == "int4" and child.in_features % group:
                    raise MiniMindError(f"int4: {name} has {child.in_features} inputs, not a multiple of the group "
                                        f"size {group}")
                setattr(module, name, Int8Linear(child) if kind == "int8" else Int4Linear(child, group))
    return model.eval()
