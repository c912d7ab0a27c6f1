"""Data pipeline throughput: `data prepare` tokens/s, packing efficiency against padding, loader batches/s.

    python benchmarks/data_pipeline.py                          # default data in runs/data (built if missing)
    python benchmarks/data_pipeline.py --seq 2048 --data-dir DIR

Packing efficiency = real tokens / token slots of the rows. The reference pads every sample to the maximum
length, so its efficiency is Σ min(len, seq) / (documents · seq); the ratio of the two is the compute that
packing saves.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from minimind.data.default.build import build_default
from minimind.data.loader import PackedLoader, TokenData
from minimind.data.packing import pack_pretrain, pack_sft, packing_stats
from minimind.data.prepare import prepare
from minimind.tokenizer.tokenizer import DEFAULT_DIR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="runs/data")
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()

    data_dir = Path(args.data_dir)
    if not (data_dir / "sft.jsonl").is_file():
        build_default(data_dir)
    print(f"seq {args.seq} · tokenizer {DEFAULT_DIR.name} · data {data_dir}\n")
    print("| stage | records | tokens | prepare tokens/s | packed | padded (reference) | packing / padding |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for stage, pack in (("pretrain", pack_pretrain), ("sft", pack_sft)):
            out = Path(tmp) / stage
            meta = prepare([data_dir / f"{stage}.jsonl"], stage, DEFAULT_DIR, out, progress=False)
            data = TokenData.open(out)
            rows = pack(data.doc_lengths, args.seq)
            stats = packing_stats(rows, data.doc_lengths, args.seq)
            print(f"| {stage} | {meta['records']:,} | {meta['num_tokens']:,} | {meta['tokens_per_second']:,} "
                  f"| {stats['efficiency']:.1%} | {stats['padded_efficiency']:.1%} "
                  f"| {stats['efficiency'] / stats['padded_efficiency']:.2f}× |", flush=True)
        loader = PackedLoader(data, rows, args.batch, args.seq, seed=0)
        start, n = time.perf_counter(), min(50, loader.steps_per_epoch)
        for _, _ in zip(range(n), loader, strict=False):
            pass
        seconds = time.perf_counter() - start
        print(f"\nloader (sft): {n / seconds:,.0f} batches/s of {args.batch}×{args.seq} "
              f"({n * args.batch * args.seq / seconds:,.0f} tokens/s)")


if __name__ == "__main__":
    main()
