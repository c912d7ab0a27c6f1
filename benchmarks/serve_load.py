"""Load test of `minimind serve`: N concurrent streaming chat clients (the official `openai` async client)
against a live server on 127.0.0.1, for a bounded time, for each N in turn.

    python benchmarks/serve_load.py                       # a fresh `mini` model, 1 and 8 clients, 20 s per phase
    python benchmarks/serve_load.py --preset minimind-3 --clients 1 4 8 16 --seconds 30
    python benchmarks/serve_load.py --model runs/quickstart/sft/model --clients 1 16

Prints requests/s, generated tokens/s, p50/p99 time to first token and request latency, errors (must be 0),
and the batching gain: aggregate tokens/s of N clients over one client's (the first phase's, when it has one).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import openai
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minimind import Transformer, load_model, load_tokenizer, preset  # noqa: E402
from minimind.infer import Engine  # noqa: E402
from tests.serve.server import live_server  # noqa: E402

PROMPTS = ["Tell me a story about a fox.", "What is 12 + 30?", "写一首关于春天的诗。", "Explain the tides.",
           "List three colours.", "你好，请介绍一下你自己。", "Why is the sky blue?", "Count to ten."]


async def client_loop(client, seconds: float, max_tokens: int, worker: int, results: list, errors: list):
    deadline, i = time.perf_counter() + seconds, worker
    while time.perf_counter() < deadline:
        start, first, tokens = time.perf_counter(), None, 0
        try:
            stream = await client.chat.completions.create(
                model="bench", messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], stream=True,
                max_tokens=max_tokens, temperature=0.8, stream_options={"include_usage": True})
            async for chunk in stream:
                if chunk.choices and first is None and chunk.choices[0].delta.content:
                    first = time.perf_counter() - start
                if chunk.usage:
                    tokens = chunk.usage.completion_tokens
            results.append((first if first is not None else time.perf_counter() - start,
                            time.perf_counter() - start, tokens))
        except Exception as e:  # noqa: BLE001 — counted and reported
            errors.append(repr(e))
        i += 1


async def phase(url: str, clients: int, seconds: float, max_tokens: int) -> dict:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=120)
    results, errors = [], []
    start = time.perf_counter()
    await asyncio.gather(*(client_loop(client, seconds, max_tokens, w, results, errors) for w in range(clients)))
    wall = time.perf_counter() - start
    ttft, latency = sorted(r[0] for r in results), sorted(r[1] for r in results)
    pct = lambda xs, q: xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")  # noqa: E731
    return {"clients": clients, "requests": len(results), "errors": len(errors), "wall": wall,
            "req/s": len(results) / wall, "tok/s": sum(r[2] for r in results) / wall,
            "ttft p50": statistics.median(ttft) if ttft else float("nan"), "ttft p99": pct(ttft, 0.99),
            "latency p50": statistics.median(latency) if latency else float("nan"),
            "latency p99": pct(latency, 0.99), "first error": errors[0] if errors else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: a fresh model of --preset)")
    parser.add_argument("--preset", default="mini")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.model or Transformer(preset(args.preset)).save(Path(tmp) / args.preset,
                                                                         tokenizer=load_tokenizer())
        engine = Engine(load_model(directory, device="cpu"), load_tokenizer(directory))
        with live_server(engine, name="bench", max_rows=max(16, *args.clients)) as url:
            rows = [asyncio.run(phase(url, n, args.seconds, args.max_tokens)) for n in args.clients]
    print(f"torch {torch.__version__} · {torch.get_num_threads()} threads · model {Path(directory).name} · "
          f"{args.seconds:g} s per phase · max_tokens {args.max_tokens} · streaming chat, temperature 0.8\n")
    print("| clients | requests | req/s | tokens/s | TTFT p50 | TTFT p99 | latency p50 | latency p99 | errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['clients']} | {r['requests']} | {r['req/s']:.2f} | {r['tok/s']:,.0f} | {r['ttft p50']:.3f} s "
              f"| {r['ttft p99']:.3f} s | {r['latency p50']:.2f} s | {r['latency p99']:.2f} s | {r['errors']} |")
    one = next((r for r in rows if r["clients"] == 1), None)
    if one:
        print("\nbatching gain (tokens/s over one client's): "
              + ", ".join(f"{r['clients']} clients {r['tok/s'] / one['tok/s']:.2f}×" for r in rows if r is not one))
    for r in rows:
        if r["errors"]:
            print(f"errors with {r['clients']} clients, first: {r['first error']}")
    if any(r["errors"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
