"""Load test of `minimind serve`: N concurrent streaming chat clients (the official `openai` async client)
against a live server on 127.0.0.1, for a bounded time, for each N in turn.

    python benchmarks/serve_load.py                       # a fresh `mini` model, 1 and 8 clients, 20 s per phase
    python benchmarks/serve_load.py --preset minimind-3 --clients 1 4 8 16 --seconds 30
    python benchmarks/serve_load.py --model runs/quickstart/sft/model --clients 1 16
    python benchmarks/serve_load.py --preset minimind-3 --clients 8 --long-prompt 1500   # prefill beside decoding
    python benchmarks/serve_load.py --preset minimind-3 --clients 8 --long-prompt 1500 --prefill-tokens 100000

Prints requests/s, generated tokens/s, p50/p99 time to first token and request latency, p99 and largest gap
between two tokens of a stream, errors (must be 0), and the batching gain: aggregate tokens/s of N clients over
one client's (the first phase's, when it has one). `--long-prompt N` adds one client that keeps sending prompts of
about N tokens (its requests are not counted in the table; its TTFT is printed below it): the token gaps of the
other streams then show what its prefill costs them, in pieces of `--prefill-tokens` (the scheduler's
PREFILL_TOKENS; a large value prefills each prompt in one forward). `--compile` serves through the compiled decode
step, compiled for every row bucket up to the clients before the first phase.
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
from minimind.infer import Engine, SamplingParams  # noqa: E402
from minimind.infer.engine import ROW_BUCKETS  # noqa: E402
from minimind.serve import scheduler  # noqa: E402
from tests.serve.server import live_server  # noqa: E402

PROMPTS = ["Tell me a story about a fox.", "What is 12 + 30?", "写一首关于春天的诗。", "Explain the tides.",
           "List three colours.", "你好，请介绍一下你自己。", "Why is the sky blue?", "Count to ten."]


async def client_loop(client, seconds: float, max_tokens: int, prompts: list[str], worker: int, results: list,
                      gaps: list, errors: list):
    deadline, i = time.perf_counter() + seconds, worker
    while time.perf_counter() < deadline:
        start, first, tokens, last = time.perf_counter(), None, 0, None
        try:
            stream = await client.chat.completions.create(
                model="bench", messages=[{"role": "user", "content": prompts[i % len(prompts)]}], stream=True,
                max_tokens=max_tokens, temperature=0.8, stream_options={"include_usage": True})
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    now = time.perf_counter()
                    first = now - start if first is None else first
                    if last is not None:
                        gaps.append(now - last)
                    last = now
                if chunk.usage:
                    tokens = chunk.usage.completion_tokens
            results.append((first if first is not None else time.perf_counter() - start,
                            time.perf_counter() - start, tokens))
        except Exception as e:  # noqa: BLE001 — counted and reported
            errors.append(repr(e))
        i += 1


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def phase(url: str, clients: int, seconds: float, max_tokens: int, long_prompt: int) -> dict:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=120)
    results, gaps, errors, long_results = [], [], [], []
    loops = [client_loop(client, seconds, max_tokens, PROMPTS, w, results, gaps, errors) for w in range(clients)]
    if long_prompt:                       # "a b c …" is about one token per word
        text = " ".join(f"w{k % 97}" for k in range(long_prompt // 2))
        loops.append(client_loop(client, seconds, 8, [text], 0, long_results, [], errors))
    start = time.perf_counter()
    await asyncio.gather(*loops)
    wall = time.perf_counter() - start
    ttft, latency = [r[0] for r in results], [r[1] for r in results]
    return {"clients": clients, "requests": len(results), "errors": len(errors), "wall": wall,
            "req/s": len(results) / wall, "tok/s": sum(r[2] for r in results) / wall,
            "ttft p50": statistics.median(ttft) if ttft else float("nan"), "ttft p99": pct(ttft, 0.99),
            "latency p50": statistics.median(latency) if latency else float("nan"),
            "latency p99": pct(latency, 0.99), "gap p99": pct(gaps, 0.99), "gap max": max(gaps, default=float("nan")),
            "long ttft": [r[0] for r in long_results], "first error": errors[0] if errors else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: a fresh model of --preset)")
    parser.add_argument("--preset", default="mini")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--long-prompt", type=int, default=0, help="add a client sending prompts of ~N tokens")
    parser.add_argument("--prefill-tokens", type=int, default=scheduler.PREFILL_TOKENS,
                        help="prompt tokens per prefill forward while rows decode")
    parser.add_argument("--compile", action="store_true", help="serve through the compiled decode step")
    args = parser.parse_args()
    scheduler.PREFILL_TOKENS = args.prefill_tokens
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.model or Transformer(preset(args.preset)).save(Path(tmp) / args.preset,
                                                                         tokenizer=load_tokenizer())
        engine = Engine(load_model(directory, device="cpu"), load_tokenizer(directory), compile=args.compile)
        if args.compile:                  # compile every bucket the phases can meet, before timing anything
            warm = SamplingParams(max_new_tokens=2, temperature=0, ignore_eos=True)
            largest = engine._slots(max(args.clients) + bool(args.long_prompt))      # the bucket holding them all
            for rows in (b for b in ROW_BUCKETS if b <= largest):
                engine.generate([engine.chat_prompt([{"role": "user", "content": PROMPTS[0]}])] * rows, warm)
        with live_server(engine, name="bench", max_rows=max(16, *args.clients)) as url:
            rows = [asyncio.run(phase(url, n, args.seconds, args.max_tokens, args.long_prompt)) for n in args.clients]
    print(f"torch {torch.__version__} · {torch.get_num_threads()} threads · model {Path(directory).name} · "
          f"{args.seconds:g} s per phase · max_tokens {args.max_tokens} · streaming chat, temperature 0.8"
          f"{' · compiled' if args.compile else ''}"
          + (f" · a client sending ~{args.long_prompt}-token prompts, prefilled {args.prefill_tokens} tokens "
             "per forward" if args.long_prompt else "") + "\n")
    print("| clients | requests | req/s | tokens/s | TTFT p50 | TTFT p99 | latency p50 | latency p99 | token gap p99 "
          "| token gap max | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['clients']} | {r['requests']} | {r['req/s']:.2f} | {r['tok/s']:,.0f} | {r['ttft p50']:.3f} s "
              f"| {r['ttft p99']:.3f} s | {r['latency p50']:.2f} s | {r['latency p99']:.2f} s | {r['gap p99']:.3f} s "
              f"| {r['gap max']:.3f} s | {r['errors']} |")
    for r in rows:
        if r["long ttft"]:
            print(f"\n{r['clients']} clients: the long prompts' TTFT p50 {statistics.median(r['long ttft']):.2f} s "
                  f"over {len(r['long ttft'])} requests")
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
