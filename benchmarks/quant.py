"""Weight-only quantization against fp32 and bf16 on the CPU, side by side in one run: decode speed at batch 1
and bits per byte, for fp32, bf16, int8 and int4.

    python benchmarks/quant.py                                  # the quickstart SFT model (after `make demo`)
    python benchmarks/quant.py --model DIR --text runs/quickstart/data/eval/pretrain.jsonl --new 128

Decode: greedy tokens/s for --new tokens after a 32-token prompt (prefill excluded), eager and with
`Engine(compile=True)` (compilation not timed). bpb: Σ nats / (ln 2 · Σ bytes) over the first --tokens tokens of
each held-out document, the same weights in each form. Figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from minimind.data.formats import read_records
from minimind.infer import Engine, SamplingParams
from minimind.infer.quant import quantize
from minimind.model import load_model
from minimind.tokenizer import load_tokenizer, tokenizer_dir
from minimind.train.stages import token_bytes


def decode_speed(model, tokenizer, new: int, compile: bool) -> float:
    engine = Engine(model, tokenizer, compile=compile)
    prompt = [list(range(100, 132))]
    run = lambda n: engine.generate(prompt, SamplingParams(max_new_tokens=n, temperature=0, ignore_eos=True))  # noqa: E731
    run(new)                                                                 # warm-up and compilation
    start = time.perf_counter()
    run(1)
    prefill = time.perf_counter() - start
    start = time.perf_counter()
    run(new)
    return (new - 1) / (time.perf_counter() - start - prefill)


@torch.no_grad()
def bits_per_byte(model, tokenizer, texts: list[str], max_tokens: int) -> float:
    nbytes_of = token_bytes(tokenizer)
    nats = nbytes = 0.0
    for text in texts:
        ids = torch.tensor([tokenizer.encode(text)[:max_tokens]])
        logits = model(ids).logits[0, :-1].float()
        targets = ids[0, 1:]
        nats += F.cross_entropy(logits, targets, reduction="sum").item()
        nbytes += nbytes_of[targets].sum().item()
    return nats / (math.log(2) * nbytes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="runs/quickstart/sft/model")
    parser.add_argument("--text", default="runs/quickstart/data/eval/pretrain.jsonl")
    parser.add_argument("--docs", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer(tokenizer_dir(args.model))
    texts = [r["text"] for r in read_records(args.text, "pretrain")][:args.docs]
    models = {"fp32": load_model(args.model, device="cpu", dtype=torch.float32),
              "bf16": load_model(args.model, device="cpu", dtype=torch.bfloat16),
              "int8": quantize(load_model(args.model, device="cpu", dtype=torch.float32), "int8"),
              "int4": quantize(load_model(args.model, device="cpu", dtype=torch.float32), "int4")}
    rows = {}
    for name, model in models.items():
        rows[name] = (decode_speed(model, tokenizer, args.new, False), decode_speed(model, tokenizer, args.new, True),
                      bits_per_byte(model, tokenizer, texts, args.tokens))
    print(f"{args.model} · {args.threads} threads · torch {torch.__version__}")
    print("| weights | decode tokens/s | compiled | bits per byte | vs fp32: compiled decode, bpb |")
    print("|---|---|---|---|---|")
    e0, c0, b0 = rows["fp32"]
    for name, (eager, compiled, bpb) in rows.items():
        print(f"| {name} | {eager:,.1f} | {compiled:,.1f} | {bpb:.4f} | ×{compiled / c0:.2f}, {bpb / b0 - 1:+.2%} |")


if __name__ == "__main__":
    main()
