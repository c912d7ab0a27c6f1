"""Training throughput on real SFT data: useful (non-padding) tokens/s of packed rows against rows padded to the
maximum length (the reference's way), with the same model, batch shape and step.

    python benchmarks/train_throughput.py                                # mini, bf16, seq 512, default data
    python benchmarks/train_throughput.py --preset minimind-3 --device cuda --seq 2048 --batch 16 --compile

Each row is one forward + backward + fused AdamW step of the SFT stage's loss. Useful tokens are the rows'
non-padding tokens; MFU counts all token slots (padding costs the same FLOPs).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from minimind.config import preset
from minimind.data.default.build import build_default
from minimind.data.loader import PackedLoader, TokenData
from minimind.data.packing import pack_sft
from minimind.data.prepare import prepare
from minimind.model import Transformer
from minimind.model.kernels import use_kernels
from minimind.perf import device_peak_flops, measure_matmul_peak, synchronize
from minimind.runtime import resolve_device
from minimind.tokenizer.tokenizer import DEFAULT_DIR
from minimind.train.stages import LanguageModelling


def run(model, optimizer, loader, steps: int, dtype, device) -> tuple[float, int]:
    """Seconds for `steps` training steps (after one warm-up step) and the non-padding tokens they saw."""
    stage, useful = LanguageModelling(pack_sft), 0
    for i, batch in enumerate(loader):
        if i == 1:
            synchronize(device)
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = stage.loss(model, batch)
        (loss.total / stage.count(batch) + loss.aux).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= 1:
            useful += int((batch["input_ids"] != 0).sum())             # padding is id 0, which text never is
        if i == steps:
            break
    synchronize(device)
    return time.perf_counter() - start, useful


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mini")
    parser.add_argument("--data-dir", default="runs/data")
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()

    device = resolve_device(None if args.device == "auto" else args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    data_dir = Path(args.data_dir)
    if not (data_dir / "sft.jsonl").is_file():
        build_default(data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        prepare([data_dir / "sft.jsonl"], "sft", DEFAULT_DIR, Path(tmp) / "sft", progress=False)
        data = TokenData.open(Path(tmp) / "sft")
    layouts = {
        "packed (ours)": pack_sft(data.doc_lengths, args.seq),
        "padded to max (reference)": [[(d, 0, int(min(n, args.seq)))] for d, n in enumerate(data.doc_lengths) if n],
    }
    peak = device_peak_flops(device) or measure_matmul_peak(dtype, device)
    print(f"{args.preset} · {device} · {args.dtype} · seq {args.seq} · batch {args.batch} · "
          f"peak {peak / 1e12:.2f} TFLOP/s\n")
    print("| layout | rows | useful tokens/s | token slots/s | MFU |")
    print("|---|---|---|---|---|")
    results = {}
    for name, rows in layouts.items():
        torch.manual_seed(0)
        model = use_kernels(Transformer(preset(args.preset)), "auto").to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        compiled = torch.compile(model) if args.compile else model
        loader = PackedLoader(data, rows, args.batch, args.seq, seed=0, device=device)
        seconds, useful = run(compiled, optimizer, loader, args.steps, dtype, device)
        slots = args.steps * args.batch * args.seq / seconds
        results[name] = useful / seconds
        print(f"| {name} | {len(rows):,} | {useful / seconds:,.0f} | {slots:,.0f} "
              f"| {slots * model.flops_per_token(args.seq) / peak:.1%} |", flush=True)
    packed, padded = results.values()
    print(f"\npacking gives {packed / padded:.1f}× the useful tokens per second of padding")


if __name__ == "__main__":
    main()
