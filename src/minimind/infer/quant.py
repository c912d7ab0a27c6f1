"""Int8 weight-only quantization for CPU inference.

Each linear weight W [out, in] becomes int8 values q and one fp32 scale per output row:

    s_o = max_i |W_oi| / 127,   q_oi = round(W_oi / s_o) ∈ [-127, 127],   y = x·qᵀ · s   (activations stay fp32)

The product runs in PyTorch's own int8-weight kernel (`torch._weight_int8pack_mm`, the one gpt-fast and torchao
use), which reads a quarter of the fp32 weight bytes; decoding one token is a pass over the weights, so that is
where the speed comes from. The tied embedding lookup stays fp32; the LM head gets its own int8 copy. MoE
experts (stacked, not Linear) stay fp32. PyTorch's older `quantize_dynamic` is deprecated and also quantizes
activations, so it is not used.
"""

from __future__ import annotations

import torch
from torch import nn

from minimind.errors import MiniMindError
from minimind.model.layers import Linear
from minimind.model.transformer import Transformer


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
            # the int8 weights (as `Linear` does for fp32)
            y = (x[..., None, :].float() * self.weight).sum(-1) * self.scales
        else:
            y = torch._weight_int8pack_mm(x.reshape(-1, self.in_features).float(), self.weight, self.scales)
        return y.view(*x.shape[:-1], self.out_features).to(x.dtype)


def quantize_int8(model: Transformer) -> Transformer:
    """Replace every Linear of `model` (CPU, fp32, LoRA merged) by an Int8Linear, in place; returns the model."""
    if next(model.parameters()).device.type != "cpu":
        raise MiniMindError("int8 weight quantization is for CPU inference (--device cpu)")
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, Linear):
                if child.lora_A is not None:
                    raise MiniMindError("merge the LoRA adapter before quantizing (minimind lora merge)")
                setattr(module, name, Int8Linear(child))
    return model.eval()

