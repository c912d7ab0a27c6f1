"""Training-step throughput, MFU and peak memory of the model presets: forward + backward + fused AdamW step on
random tokens.

    python benchmarks/model_step.py                                  # four presets, bf16, seq 512, batch 1
    python benchmarks/model_step.py --presets minimind2-small --seq 256 --batch 8 --dtype fp32 --threads 2
    python benchmarks/model_step.py --device cuda --seq 2048 --batch 16 --steps 10 --compile
    python benchmarks/model_step.py --presets minimind-3 --seq 2048 --checkpointing --json   # one JSON line
    python benchmarks/model_step.py --device cuda --seq 2048 --batch 16 --compile --documents 8   # packed rows

FLOPs per token (PaLM's estimate, `Transformer.flops_per_token`):

    6·N + 12·L·H·d·T

N = active parameters that take part in matmuls (the LM head counted, the embedding lookup and norms not; for
MoE only the top-k experts), L layers, H query heads, d head_dim, T sequence length. The 12·L·H·d·T term is the
attention scores and weighted sum, counted over the full T×T square as PaLM does.

    achieved FLOP/s = tokens/s × FLOPs/token        MFU = achieved FLOP/s / peak FLOP/s

The peak is the GPU's published dense bf16 figure (minimind.perf.PEAK_FLOPS). On the CPU it is measured: a
2048² matmul in the same dtype, for 0.3 s after every timed step; the fastest of these samples is the peak (a
shared CPU's speed drifts by ±10% over a minute, and the fastest sample is the machine least disturbed), the
median step time the achieved rate. MFU then reads as "fraction of the matmul rate this machine reaches", and
errs low, never above 100%. Peak memory: CUDA's allocator peak, or the process's peak
resident set on the CPU (exact when the run has the process to itself, as `benchmarks/suite.py` arranges).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from minimind.config import preset
from minimind.model.kernels import KERNELS, use_kernels
from minimind.model.transformer import Transformer, checkpoint_blocks
from minimind.perf import device_peak_flops, measure_matmul_peak, mfu, peak_memory, reset_peak_memory, synchronize
from minimind.runtime import keep_freed_memory, resolve_device, resolve_dtype


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def train_step(model, optimizer: torch.optim.Optimizer, x: torch.Tensor, positions: torch.Tensor | None,
               ctx) -> None:
    with ctx:
        loss = model(x, labels=x, position_ids=positions).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def bench(name: str, args, device: torch.device, dtype: torch.dtype) -> dict:
    """Time `args.steps` training steps of preset `name` after one untimed warm-up step (which compiles)."""
    model = use_kernels(Transformer(preset(name)), args.kernels).to(device).train()
    if args.checkpointing:
        checkpoint_blocks(model, range(0, model.config.num_hidden_layers, args.checkpoint_every))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)   # fused kernels: cpu, cuda, mps
    forward = torch.compile(model) if args.compile else model
    ctx = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    batches = torch.randint(model.config.vocab_size, (args.steps + 1, args.batch, args.seq), device=device)
    positions = packed_positions(args.batch, args.seq, args.documents).to(device) if args.documents > 1 else None

    reset_peak_memory(device)
    train_step(forward, optimizer, batches[0], positions, ctx)
    synchronize(device)
    published = device_peak_flops(device)
    times, peaks = [], []
    for x in batches[1:]:
        t0 = time.perf_counter()
        train_step(forward, optimizer, x, positions, ctx)
        synchronize(device)
        times.append(time.perf_counter() - t0)
        if published is None:
            peaks.append(measure_matmul_peak(dtype, device, seconds=0.3))
    seconds = statistics.median(times)
    tokens = args.batch * args.seq
    result = dict(preset=name, seq=args.seq, batch=args.batch, documents=args.documents, dtype=args.dtype,
                  compile=args.compile, kernels=args.kernels,
                  checkpointing=args.checkpointing, total=model.num_params(), active=model.num_params(active=True),
                  tokens=tokens, seconds=seconds, tokens_per_s=tokens / seconds,
                  flops_per_token=model.flops_per_token(args.seq), peak_memory=peak_memory(device),
                  peak_flops=published or max(peaks),
                  peak_source="published dense bf16" if published else f"measured 2048² {args.dtype} matmul")
    result["mfu"] = mfu(result["tokens_per_s"], result["flops_per_token"], result["peak_flops"])
    del model, forward, optimizer, batches
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def packed_positions(batch: int, seq: int, documents: int, seed: int = 0) -> torch.Tensor:
    """position_ids [batch, seq] of packed rows, each holding `documents` documents of random lengths (cut at
    sorted uniform points), as the data loader lays them out: 0, 1, … restarting at every document."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(batch):
        cuts = torch.randperm(seq - 1, generator=generator)[:documents - 1].add(1).sort().values.tolist()
        bounds = [0, *cuts, seq]
        rows.append(torch.cat([torch.arange(e - s) for s, e in zip(bounds[:-1], bounds[1:], strict=True)]))
    return torch.stack(rows)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["minimind2-small", "minimind-3", "minimind-3-moe", "minimind2"])
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--documents", type=int, default=1,
                   help="documents packed per row (document-masked attention: flex attention on a GPU)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (compilation not timed)")
    p.add_argument("--kernels", choices=KERNELS, default="auto", help="the fast paths, or the plain reference model")
    p.add_argument("--checkpointing", action="store_true", help="activation checkpointing of every block")
    p.add_argument("--checkpoint-every", type=int, default=1, help="with --checkpointing: every k-th block only")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print one JSON object per preset instead of a table")
    return p


def main() -> None:
    args = parser().parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype)
    if device.type == "cpu":
        keep_freed_memory()                       # as the trainer does
    if not args.json:
        print(f"device: {device_name(device)} ({device.type}) · torch {torch.__version__} · "
              f"threads {torch.get_num_threads()} · dtype {args.dtype} · seq {args.seq} · batch {args.batch} · "
              f"steps {args.steps}{' · compiled' if args.compile else ''}"
              f"{f' · {args.documents} documents per row' if args.documents > 1 else ''}\n")
        print("| preset | params (M) total / active | tokens/step | s/step | tokens/s | TFLOP/s | peak TFLOP/s "
              "| MFU | peak memory |")
        print("|---|---|---|---|---|---|---|---|---|")
    for name in args.presets:
        r = bench(name, args, device, dtype)
        if args.json:
            print(json.dumps(r), flush=True)
            continue
        print(f"| {name} | {r['total'] / 1e6:.1f} / {r['active'] / 1e6:.1f} | {r['tokens']} | {r['seconds']:.3f} "
              f"| {r['tokens_per_s']:,.0f} | {r['tokens_per_s'] * r['flops_per_token'] / 1e12:.3f} "
              f"| {r['peak_flops'] / 1e12:.3f} | {r['mfu']:.1%} | {r['peak_memory'] / 2**30:.2f} GiB |", flush=True)


if __name__ == "__main__":
    main()
