"""What sliding-window attention and the Gated-DeltaNet hybrid buy, measured side by side in one run.

    python benchmarks/attention_variants.py [--out runs/attention] [--data runs/quickstart/data] [--window 64]

Three variants of `mini` (4 layers × 256): dense attention; every layer a sliding window (Qwen3's
use_sliding_window); the hybrid, layers 0–2 Gated DeltaNet (4 heads of 64) and layer 3 attention (MiniMind-Linear's
one-in-four).
1. Equal training compute on the default data: the main job's pretraining (configs/tiny/pretrain.yaml, 400 steps
   of 4,096 tokens, rows of 256) of each from the same seed, then held-out bits per byte (eval/pretrain.jsonl,
   exact, window 256) and training tokens/s.
2. Decoding at long contexts: each with 32k positions and fresh weights, a prompt of 512 / 4k / 16k tokens, then
   64 greedy tokens at batch 1: decode tokens/s, the KV cache's largest size during the run, and the process's peak
   resident memory (the prefill's activations included; a process per measurement).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

from minimind import Transformer, load_tokenizer, preset
from minimind.data.default.build import build_default
from minimind.eval.bpb import bits_per_byte, read_documents
from minimind.eval.scoring import Scorer
from minimind.infer import Engine, SamplingParams
from minimind.model import load_model
from minimind.quickstart import run_summary
from minimind.train.config import load_config
from minimind.train.trainer import train

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tiny"
CONTEXTS = (512, 4096, 16384)
VARIANTS = ("dense", "windowed", "hybrid")
NEW = 64


HYBRID = dict(layer_types=["linear_attention"] * 3 + ["full_attention"], linear_key_head_dim=64,
              linear_value_head_dim=64, linear_num_key_heads=4, linear_num_value_heads=4)


def variant(name: str, window: int, **changes):
    """`mini` as the variant `name` (dense, windowed, hybrid)."""
    config = preset("mini").replace(**changes)
    if name == "windowed":
        return config.replace(use_sliding_window=True, sliding_window=window)
    return config.replace(**HYBRID) if name == "hybrid" else config


def pretrain(name: str, out: Path, data: Path, window: int) -> Path:
    """The main job's pretraining of the variant (a fresh model directory as its start)."""
    start = out / f"{name}-init"
    torch.manual_seed(0)
    Transformer(variant(name, window)).save(start, tokenizer=load_tokenizer())
    run = out / name
    if not (run / "model" / "config.json").is_file():
        train(load_config(CONFIGS / "pretrain.yaml", [
            f"out={run}", f"model={start}", f'data.train=["{data / "pretrain.jsonl"}"]',
            f'data.val=["{data / "eval" / "pretrain.jsonl"}"]', f"data.prepared={out / 'prepared'}"]))
    return run / "model"


def decode(name: str, window: int, context: int) -> dict:
    torch.manual_seed(0)
    engine = Engine(Transformer(variant(name, window, max_position_embeddings=32768)).eval(), load_tokenizer())
    prompt = [torch.randint(300, 6000, (context,)).tolist()]
    params = SamplingParams(max_new_tokens=NEW, temperature=0, ignore_eos=True)
    start = time.perf_counter()
    batch = engine.start(prompt, params)
    prefill = time.perf_counter() - start
    start, cache = time.perf_counter(), 0
    while batch:
        c = batch.cache
        cache = max(cache, sum(t.numel() * t.element_size()
                               for t in (*c.k, *c.v, *c.tails.values(), *c.states.values())))
        batch.step()
    seconds = time.perf_counter() - start
    return {"prefill_s": prefill, "decode_tokens_per_s": NEW / seconds, "cache_mb": cache / 2**20}


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the parent across fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/attention")
    parser.add_argument("--data", default="runs/quickstart/data")
    parser.add_argument("--window", type=int, default=64, help="the training comparison's window (rows of 256)")
    parser.add_argument("--decode-window", type=int, default=512)
    parser.add_argument("--part", choices=("all", "train", "decode"), default="all")
    parser.add_argument("--context", type=int, help="decode: one context length (a fresh process per length "
                                                    "gives each its own peak memory)")
    parser.add_argument("--variant", choices=VARIANTS)
    args = parser.parse_args()
    out, data = Path(args.out), Path(args.data)
    out.mkdir(parents=True, exist_ok=True)

    if args.context:                                        # one measurement, for its own process's peak memory
        r = decode(args.variant, args.decode_window, args.context)
        r["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(r))
        return

    results = {}
    if args.part in ("all", "train"):
        if not (data / "pretrain.jsonl").is_file():
            build_default(data)
        documents = read_documents(data / "eval" / "pretrain.jsonl")
        for name in VARIANTS:
            model_dir = pretrain(name, out, data, args.window)
            summary = run_summary(model_dir.parent / "metrics.jsonl")
            bpb = bits_per_byte(Scorer(load_model(model_dir, device="cpu"), load_tokenizer(), window=256), documents)
            results[name] = {"bpb": bpb["bpb"], "tokens_per_s": summary["tokens_per_s"]}
            print(f"{name}: held-out {bpb['bpb']['value']:.4f} bits/byte [{bpb['bpb']['low']:.4f}, "
                  f"{bpb['bpb']['high']:.4f}], training {summary['tokens_per_s']:,.0f} tokens/s", flush=True)
    if args.part in ("all", "decode"):
        import subprocess
        import sys

        print(f"\n| context | dense: decode tokens/s · cache · peak RSS | window {args.decode_window} | hybrid |")
        print("|---|---|---|---|")
        for context in CONTEXTS:
            cells = []
            for name in VARIANTS:
                line = subprocess.run([sys.executable, __file__, "--context", str(context), "--variant", name,
                                       "--decode-window", str(args.decode_window)], check=True, capture_output=True,
                                      text=True).stdout.strip().splitlines()[-1]
                r = json.loads(line)
                results[f"{name}-{context}"] = r
                cells.append(f"{r['decode_tokens_per_s']:.0f} · {r['cache_mb']:.1f} MB · {r['peak_rss_mb']:.0f} MB")
            print(f"| {context:,} | {' | '.join(cells)} |", flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
