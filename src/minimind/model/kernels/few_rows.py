"""Decoding a few rows at once on the CPU: x·Wᵀ through a packed-weight AVX-512 kernel (few_rows.cpp).

Replaces `Linear.product` (F.linear, MKL's GEMM) for 1–64 fp32 input rows (1–6 bf16 rows: the weights widened
in registers, sums in fp32) outside autograd and autocast: the decode step of a batch of sequences. Under
torch.compile it is the custom operator `minimind::few_rows_matmul`, opaque to Inductor, which fuses the norms,
rotary and adds around it (a single compiled row keeps OneRowLinear's multiply-reduce, which measured faster).
Justified by: minimind-3's decode products (8 layers + head, 256 MB of fp32 weights, 2 threads, the 2-core EPYC)
took 14–15 / 22–24 / 21–25 / 23–29 ms per step through MKL at 1 / 4 / 8 / 12 rows (17 → 9 GB/s: its skinny GEMM
reads the weights more slowly the more rows it has) and 6.1 / 7.3 / 7.8 / 10.7 ms through this kernel: 2.1–3.0×
(docs/performance.md, batched decoding).

It runs only inside `decoding(packs)`, which the inference Engine wraps around its model calls: each weight is
packed into panels of 48 outputs the first time it is used there and kept in `packs`, the Engine's own dict (a
second copy of the weights for the Engine's life). An Engine decodes the weights it was given; a caller that changes
them (an RL step) makes a new Engine, so a stale packing is never read (a version counter would not do: CPU fused
AdamW updates weights without moving it). A compiled step cannot pack (a graph does not write a dict):
`pack_weights` packs every weight it may meet before the first compiled call. The kernel is compiled the first
time it is needed (about 20 s, then cached by torch.utils.cpp_extension) and only on a CPU that torch reports as
AVX512; elsewhere, or if the build fails (no compiler), `Linear` runs as it is.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

from minimind.model.kernels.moe_padding import PaddedMoE
from minimind.model.kernels.one_row import OneRowLinear, one_compiled_cpu_row

MAX_ROWS = {torch.float32: 64,      # tiles of ≤ 8 rows share a pass over each weight panel (few_rows.cpp)
            torch.bfloat16: 6}      # above 6 rows oneDNN's bf16 GEMM was as fast (minimind-3's shapes, 8 rows:
                                    # 5.9 ms against 6.7; 4 rows: 5.4 against 4.4)
_context = threading.local()


@contextmanager
def decoding(packs: dict) -> Iterator[None]:
    """Within (on this thread): products of a few rows run through the kernel with the packed weights in `packs`
    ({module: panels}, filled as modules are met), whose weights must not change while `packs` is in use."""
    previous = getattr(_context, "packs", None)
    _context.packs = packs
    try:
        yield
    finally:
        _context.packs = previous


@functools.cache
def extension():
    """The compiled few_rows.cpp module, or None where it cannot run (not AVX-512, no compiler)."""
    if torch.backends.cpu.get_cpu_capability() != "AVX512":
        return None
    from torch.utils import cpp_extension

    try:
        return cpp_extension.load("minimind_few_rows", [str(Path(__file__).with_name("few_rows.cpp"))],
                                  extra_cflags=["-O3", "-mavx512f", "-mfma"], verbose=False)
    except (OSError, RuntimeError, ImportError) as e:      # no compiler or ninja: the plain product serves
        print(f"minimind: the few-rows decode kernel could not be built ({str(e).splitlines()[0]}); "
              "decoding uses F.linear", file=sys.stderr)
        return None


@torch.library.custom_op("minimind::few_rows_matmul", mutates_args=())
def few_rows_matmul(x: torch.Tensor, panels: torch.Tensor) -> torch.Tensor:
    """x [rows, in] fp32 · the packed weight (`extension().pack(W)`, W [out, in]) → x·Wᵀ [rows, out] fp32."""
    return extension().packed_matmul(x, panels)


@few_rows_matmul.register_fake
def _(x: torch.Tensor, panels: torch.Tensor) -> torch.Tensor:
    return x.new_empty((x.shape[0], panels.numel() // x.shape[1]))


def applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """A CPU product of 1–MAX_ROWS[dtype] rows in fp32 or bf16 (x and W alike, no autocast), outside autograd, with
    a multiple of 16 outputs. (Whether the kernel exists is asked when packing: a packed weight implies it.)"""
    return (x.device.type == "cpu" and x.dtype == weight.dtype and x.dtype in MAX_ROWS
            and not torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu")
            and x.numel() <= MAX_ROWS[x.dtype] * x.shape[-1] and weight.shape[0] % 16 == 0)


@torch.no_grad()
def pack_weights(model: torch.nn.Module, packs: dict) -> None:
    """Pack every FewRowsLinear weight and FewRowsMoE layer the kernel takes into `packs` (judged by `applies` on one
    row of their own dtype), as the compiled decode step expects to find them."""
    if extension() is None:
        return
    for module in model.modules():
        if isinstance(module, FewRowsLinear) and applies(module.weight[:1], module.weight):
            packs.setdefault(module, module.pack())
        if isinstance(module, FewRowsMoE) and module.packable(module.experts.gate_proj[0, :1]):
            packs.setdefault(module, module.pack())


def _packing(module: torch.nn.Module, pack):
    """`module`'s packed weights in this thread's `decoding` scope, made by `pack()` the first time; None outside a
    scope, without the kernel, or inside a compiled step that finds them unpacked (a graph does not write a dict)."""
    packs = getattr(_context, "packs", None)
    if packs is None or (module not in packs and (torch.compiler.is_compiling() or extension() is None)):
        return None
    if module not in packs:
        packs[module] = pack()
    return packs[module]


class FewRowsLinear(OneRowLinear):
    """`Linear` whose x·Wᵀ runs through the packed kernel inside `decoding` for a few rows (`applies`); one compiled
    row still takes OneRowLinear's multiply-reduce, and everything else the plain product."""

    def product(self, x: torch.Tensor) -> torch.Tensor:
        if one_compiled_cpu_row(x) or not applies(x, self.weight) or (panels := _packing(self, self.pack)) is None:
            return super().product(x)
        y = few_rows_matmul(x.reshape(-1, x.shape[-1]).float(), panels)                 # sums in fp32
        y = y.view(*x.shape[:-1], -1).to(x.dtype)
        return y + self.bias if self.bias is not None else y

    def pack(self) -> torch.Tensor:
        return extension().pack(self.weight.detach())


@torch.library.custom_op("minimind::few_rows_experts", mutates_args=())
def few_rows_experts(x: torch.Tensor, experts: torch.Tensor, weights: torch.Tensor,
                     panels: list[torch.Tensor]) -> torch.Tensor:
    """y_n = Σ_j w_nj · SwiGLU_{e_nj}(x_n) for x [N, hidden] fp32, chosen experts and weights [N, k], and each expert's
    packed gate, up and down (`panels[3e:3e+3]`) → [N, hidden] fp32: every chosen expert once, on its own rows."""
    chosen, order = experts.flatten().sort(stable=True)
    token, weight = order // experts.shape[1], weights.flatten()[order, None].float()
    y = torch.zeros(x.shape, dtype=torch.float32)
    start = 0
    for e, n in enumerate(torch.bincount(chosen, minlength=len(panels) // 3).tolist()):
        if n:
            rows, (gate, up, down) = token[start:start + n], panels[3 * e:3 * e + 3]
            xe = x.index_select(0, rows)
            h = F.silu(extension().packed_matmul(xe, gate)) * extension().packed_matmul(xe, up)
            y.index_add_(0, rows, extension().packed_matmul(h, down) * weight[start:start + n])
            start += n
    return y


@few_rows_experts.register_fake
def _(x: torch.Tensor, experts: torch.Tensor, weights: torch.Tensor, panels: list[torch.Tensor]) -> torch.Tensor:
    return torch.empty_like(x, dtype=torch.float32)


class FewRowsMoE(PaddedMoE):
    """`MoE` whose experts run through the packed kernel for a few decoded rows (`few_rows_experts`: an expert no row
    chose is not read); one compiled row keeps PaddedMoE's multiply-reduces, and the rest its grouped GEMMs.
    Justified by: at batch 8 the grouped fp32 GEMMs of minimind-3-moe decoded 121 tokens/s against transformers' 113,
    this path 316 against 123 (docs/performance.md, batched decoding)."""

    def run_experts(self, x: torch.Tensor, experts: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if one_compiled_cpu_row(x) or not self.packable(x) or (panels := _packing(self, self.pack)) is None:
            return super().run_experts(x, experts, weights)
        return few_rows_experts(x.float(), experts, weights, panels).to(x.dtype)

    def packable(self, x: torch.Tensor) -> bool:
        """The kernel takes gate and up (and down: its outputs, hidden, a multiple of 16) for x's rows."""
        return applies(x, self.experts.gate_proj[0]) and self.experts.down_proj.shape[1] % 16 == 0

    def pack(self) -> list[torch.Tensor]:
        """Each expert's gate, up and down weights packed, in that order."""
        stacks = self.experts.gate_proj, self.experts.up_proj, self.experts.down_proj
        return [extension().pack(w[e].detach()) for e in range(self.num_experts) for w in stacks]
