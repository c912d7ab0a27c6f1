"""Generation speed of our engine against transformers' `generate` on the same model directory, in one run.

    python benchmarks/decode.py                                    # a fresh `mini` and `minimind-3`, fp32, CPU
    python benchmarks/decode.py --model runs/quickstart/sft/model --batches 1 16
    python benchmarks/decode.py --dtype bf16 --prompt-len 1900 --batches 1     # a long context, bf16 weights
    python benchmarks/decode.py --presets minimind-3-moe --batches 1

For each batch size: prefill tokens/s (prompt tokens / time of a 1-token generation), decode tokens/s
(new tokens / the rest of the time), and memory-bandwidth utilisation: decoding reads every weight once per
step (at batch 1 of an MoE, only the top-k experts'), so achieved bandwidth = weight bytes · steps / decode
time, against the read rate of a large tensor measured in the same run. The roofline of a step is the slower of
reading the weights at that rate and doing its 2·N·batch FLOPs (N the active parameters) at the matmul peak
measured in the same run (perf.measure_matmul_peak); "of roofline" is decode tokens/s over batch / that time (the
attention over the cache, sampling and the Python around them are what is left). Both engines decode greedily for
exactly --new tokens (no early stop).
At batch 1 a third row, "ours, compiled", uses `Engine(compile=True)` (its compilation is not timed).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from minimind import Transformer, load_model, load_tokenizer, preset
from minimind.infer import Engine, SamplingParams
from minimind.perf import measure_matmul_peak


def read_bandwidth(device, megabytes: int = 512) -> float:
    """Bytes/s of summing a large tensor (reading it once), the reference for memory-bandwidth utilisation:
    decoding reads weights and writes almost nothing."""
    src = torch.randn(megabytes * 2**20 // 4, device=device)
    src.sum()
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < 1.0:
        src.sum()
        count += 1
    return src.numel() * 4 * count / (time.perf_counter() - start)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ours(model, tokenizer, prompts, new: int, compile: bool = False) -> tuple[float, float]:
    engine = Engine(model, tokenizer, compile=compile)
    run = lambda n: engine.generate(prompts, SamplingParams(max_new_tokens=n, temperature=0, ignore_eos=True))  # noqa: E731
    run(new)                                                         # warm-up (and compilation)
    prefill = timed(lambda: run(1))
    return prefill, timed(lambda: run(new)) - prefill


def theirs(hf_model, prompts, new: int) -> tuple[float, float]:
    ids = torch.tensor(prompts)
    kwargs = dict(do_sample=False, pad_token_id=0, eos_token_id=None, attention_mask=torch.ones_like(ids))
    run = lambda n: hf_model.generate(ids, max_new_tokens=n, min_new_tokens=n, **kwargs)  # noqa: E731
    with torch.inference_mode():
        run(2)
        prefill = timed(lambda: run(1))
        return prefill, timed(lambda: run(new)) - prefill


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="*", help="model directories (default: fresh models of --presets)")
    parser.add_argument("--presets", nargs="+", default=["mini", "minimind-3"], help="presets of the fresh models")
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="the weights' dtype (both engines)")
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32

    with tempfile.TemporaryDirectory() as tmp:
        directories = args.model or []
        if not directories:
            for name in args.presets:
                torch.manual_seed(0)
                directories.append(Transformer(preset(name)).save(Path(tmp) / name, tokenizer=load_tokenizer()))
        bandwidth, peak = read_bandwidth("cpu"), measure_matmul_peak(dtype, "cpu")
        print(f"torch {torch.__version__} · {torch.get_num_threads()} threads · {args.dtype} "
              f"· prompt {args.prompt_len} · {args.new} new tokens · read bandwidth {bandwidth / 1e9:.1f} GB/s "
              f"· matmul peak {peak / 1e9:.0f} GFLOP/s\n")
        print("| model | batch | engine | prefill tok/s | decode tok/s | bandwidth use | roofline tok/s | of roofline "
              "| ours / transformers |")
        print("|---|---|---|---|---|---|---|---|---|")
        for directory in map(Path, directories):
            model = load_model(directory, device="cpu", dtype=dtype)
            tokenizer = load_tokenizer(directory)
            hf_model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype).eval()
            for batch in args.batches:
                prompts = [[1 + (i * 7 + t) % 6000 for t in range(args.prompt_len)] for i in range(batch)]
                runs = {"transformers": theirs(hf_model, prompts, args.new),
                        "ours": ours(model, tokenizer, prompts, args.new)}
                if batch == 1:
                    runs["ours, compiled"] = ours(model, tokenizer, prompts, args.new, compile=True)
                steps = args.new - 1
                # what one step reads: the active weights (top-k experts) for one row, all of them for a batch
                params = model.num_params(active=batch == 1)
                weight_bytes = params * model.lm_head.weight.element_size()
                roofline = batch / max(weight_bytes / bandwidth, 2 * params * batch / peak)
                rates = {name: batch * steps / decode for name, (_, decode) in runs.items()}
                for name, (prefill, decode) in runs.items():
                    use = weight_bytes * steps / decode / bandwidth
                    ratio = f"{rates[name] / rates['transformers']:.2f}×"
                    print(f"| {directory.name} | {batch} | {name} | {batch * args.prompt_len / prefill:,.0f} "
                          f"| {rates[name]:,.1f} | {use:.0%} | {roofline:,.0f} | {rates[name] / roofline:.0%} "
                          f"| {ratio} |", flush=True)


if __name__ == "__main__":
    main()
