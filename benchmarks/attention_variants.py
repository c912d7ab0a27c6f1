"""What sliding-window attention buys, measured side by side in one run on this machine.

    python benchmarks/attention_variants.py [--out runs/attention] [--data runs/quickstart/data] [--window 64]

1. Equal training compute on the default data: the main job's pretraining (configs/tiny/pretrain.yaml: `mini`,
   400 steps of 4,096 tokens, rows of 256) for the dense model and for the same model whose layers attend to the
   last --window positions only (Qwen3's use_sliding_window, all layers), then held-out bits per byte
   (eval/pretrain.jsonl, exact, window 256).
2. Decoding at long contexts: `mini` with 32k positions, fresh weights, a prompt of 512 / 4k / 16k tokens, then
   64 greedy tokens at batch 1: decode tokens/s, the KV cache's largest size during the run, and the process's peak
   resident memory (the prefill's activations included), dense against windowed (--decode-window, all layers).
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
NEW = 64


def pretrain(name: str, out: Path, data: Path, window: int | None) -> Path:
    """The main job's pretraining of `mini`, dense or windowed (a fresh model directory as its start)."""
    start = out / f"{name}-init"
    torch.manual_seed(0)
    config = preset("mini") if window is None else preset("mini").replace(use_sliding_window=True,
                                                                          sliding_window=window)
    Transformer(config).save(start, tokenizer=load_tokenizer())
    run = out / name
    if not (run / "model" / "config.json").is_file():
        train(load_config(CONFIGS / "pretrain.yaml", [
            f"out={run}", f"model={start}", f'data.train=["{data / "pretrain.jsonl"}"]',
            f'data.val=["{data / "eval" / "pretrain.jsonl"}"]', f"data.prepared={out / 'prepared'}"]))
    return run / "model"


def decode(window: int | None, context: int) -> dict:
    torch.manual_seed(0)
    config = preset("mini").replace(max_position_embeddings=32768)
    if window:
        config = config.replace(use_sliding_window=True, sliding_window=window)
    engine = Engine(Transformer(config).eval(), load_tokenizer())
    prompt = [torch.randint(300, 6000, (context,)).tolist()]
    params = SamplingParams(max_new_tokens=NEW, temperature=0, ignore_eos=True)
    start = time.perf_counter()
    batch = engine.start(prompt, params)
    prefill = time.perf_counter() - start
    start, cache = time.perf_counter(), 0
    while batch:
        cache = max(cache, sum(t.numel() * t.element_size() for t in (*batch.cache.k, *batch.cache.v)))
        batch.step()
    seconds = time.perf_counter() - start
    return {"prefill_s": prefill, "decode_tokens_per_s": NEW / seconds, "cache_mb": cache / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/attention")
    parser.add_argument("--data", default="runs/quickstart/data")
    parser.add_argument("--window", type=int, default=64, help="the training comparison's window (rows of 256)")
    parser.add_argument("--decode-window", type=int, default=512)
    parser.add_argument("--part", choices=("all", "train", "decode"), default="all")
    parser.add_argument("--context", type=int, help="decode: one context length (a fresh process per length "
                                                    "gives each its own peak memory)")
    parser.add_argument("--variant", choices=("dense", "windowed"))
    args = parser.parse_args()
    out, data = Path(args.out), Path(args.data)
    out.mkdir(parents=True, exist_ok=True)

    if args.context:                                        # one measurement, for its own process's peak memory
        r = decode(args.decode_window if args.variant == "windowed" else None, args.context)
        r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(r))
        return

    results = {}
    if args.part in ("all", "train"):
        if not (data / "pretrain.jsonl").is_file():
            build_default(data)
        documents = read_documents(data / "eval" / "pretrain.jsonl")
        for name, window in (("dense", None), (f"window-{args.window}", args.window)):
            model_dir = pretrain(name, out, data, window)
            summary = run_summary(model_dir.parent / "metrics.jsonl")
            bpb = bits_per_byte(Scorer(load_model(model_dir, device="cpu"), load_tokenizer(), window=256), documents)
            results[name] = {"bpb": bpb["bpb"], "tokens_per_s": summary["tokens_per_s"]}
            print(f"{name}: held-out {bpb['bpb']['value']:.4f} bits/byte [{bpb['bpb']['low']:.4f}, "
                  f"{bpb['bpb']['high']:.4f}], training {summary['tokens_per_s']:,.0f} tokens/s", flush=True)
    if args.part in ("all", "decode"):
        import subprocess
        import sys

        print(f"\n| context | dense: decode tokens/s · KV cache · peak RSS | window {args.decode_window}: same |")
        print("|---|---|---|")
        for context in CONTEXTS:
            cells = []
            for variant in ("dense", "windowed"):
                line = subprocess.run([sys.executable, __file__, "--context", str(context), "--variant", variant,
                                       "--decode-window", str(args.decode_window)], check=True, capture_output=True,
                                      text=True).stdout.strip().splitlines()[-1]
                r = json.loads(line)
                results[f"{variant}-{context}"] = r
                cells.append(f"{r['decode_tokens_per_s']:.0f} · {r['cache_mb']:.1f} MB · {r['peak_rss_mb']:.0f} MB")
            print(f"| {context:,} | {cells[0]} | {cells[1]} |", flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
