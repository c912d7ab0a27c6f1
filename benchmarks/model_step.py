"""Training-step throughput and MFU of the model presets: forward + backward + fused AdamW step on random tokens.

    python benchmarks/model_step.py                                  # four presets, bf16, seq 512, batch 1, 4 steps
    python benchmarks/model_step.py --dtype fp32 --threads 2
    python benchmarks/model_step.py --device cuda --seq 2048 --batch 16 --steps 10
    python benchmarks/model_step.py --presets tiny tiny-moe --seq 64 --steps 2      # smoke test, seconds

FLOPs per token (PaLM's estimate, `Transformer.flops_per_token`):

    6·N + 12·L·H·d·T

N = active parameters that take part in matmuls (the LM head counted, the embedding lookup and norms not; for
MoE only the top-k experts), L layers, H query heads, d head_dim, T sequence length. The 12·L·H·d·T term is the
attention scores and weighted sum, counted over the full T×T square as PaLM does.

    achieved FLOP/s = tokens/s × FLOPs/token        MFU = achieved FLOP/s / peak FLOP/s

The peak is the GPU's published dense bf16 figure (minimind.perf.PEAK_FLOPS); on the CPU, or a GPU not in the
table, it is measured here with a 2048² matmul in the same dtype, so CPU MFU reads as "fraction of the matmul
rate this machine reaches", not of a datasheet number.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import platform
import time
from pathlib import Path

import torch

from minimind.config import preset
from minimind.model.transformer import Transformer
from minimind.perf import device_peak_flops, measure_matmul_peak, mfu
from minimind.runtime import resolve_device, resolve_dtype


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def train_step(model: Transformer, optimizer: torch.optim.Optimizer, x: torch.Tensor, ctx) -> None:
    with ctx:
        loss = model(x, labels=x).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def bench(name: str, args, device: torch.device, dtype: torch.dtype) -> dict:
    """Time `args.steps` training steps of preset `name` after one untimed warm-up step."""
    model = Transformer(preset(name)).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)   # fused kernels: cpu, cuda, mps
    ctx = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    batches = torch.randint(model.config.vocab_size, (args.steps + 1, args.batch, args.seq), device=device)

    train_step(model, optimizer, batches[0], ctx)
    synchronize(device)
    t0 = time.perf_counter()
    for x in batches[1:]:
        train_step(model, optimizer, x, ctx)
    synchronize(device)
    seconds = (time.perf_counter() - t0) / args.steps

    tokens = args.batch * args.seq
    result = dict(name=name, total=model.num_params(), active=model.num_params(active=True), tokens=tokens,
                  seconds=seconds, tokens_per_s=tokens / seconds, flops_per_token=model.flops_per_token(args.seq))
    del model, optimizer, batches
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+",
                        default=["minimind2-small", "minimind-3", "minimind-3-moe", "minimind2"])
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype)
    peak = device_peak_flops(device)
    source = "published dense bf16"
    if peak is None:
        peak = measure_matmul_peak(dtype, device)
        source = f"measured 2048² {args.dtype} matmul"

    print(f"device: {device_name(device)} ({device.type}) · torch {torch.__version__} · "
          f"threads {torch.get_num_threads()} · dtype {args.dtype} · seq {args.seq} · batch {args.batch} · "
          f"steps {args.steps}")
    print(f"peak: {peak / 1e12:.3f} TFLOP/s ({source})\n")
    print("| preset | params (M) total / active | tokens/step | s/step | tokens/s | TFLOP/s | MFU |")
    print("|---|---|---|---|---|---|---|")
    for name in args.presets:
        r = bench(name, args, device, dtype)
        achieved = r["tokens_per_s"] * r["flops_per_token"]
        print(f"| {name} | {r['total'] / 1e6:.1f} / {r['active'] / 1e6:.1f} | {r['tokens']} | {r['seconds']:.3f} "
              f"| {r['tokens_per_s']:,.0f} | {achieved / 1e12:.3f} "
              f"| {mfu(r['tokens_per_s'], r['flops_per_token'], peak):.1%} |", flush=True)


if __name__ == "__main__":
    main()
