"""Generation speed of our engine against transformers' `generate` on the same model directory, in one run.

    python benchmarks/decode.py             # fresh minimind-3 and minimind-3-moe, fp32 and bf16, batch 1/4/8/16, CPU
    python benchmarks/decode.py --model runs/quickstart/sft/model --batches 1 16 --dtypes fp32
    python benchmarks/decode.py --dtypes bf16 --prompt-len 1900 --batches 1     # a long context, bf16 weights

For each batch size: prefill tokens/s (prompt tokens / time of a 1-token generation), decode tokens/s
(new tokens / the rest of the time), and memory-bandwidth utilisation: decoding reads every weight once per
step (at batch 1 of an MoE, only the top-k experts'), so achieved bandwidth = weight bytes · steps / decode
time, against the read rate of a large tensor measured in the same run. The roofline of a step is the slower of
reading the weights at that rate and doing its 2·N·batch FLOPs (N the active parameters) at the matmul peak
measured in the same run (perf.measure_matmul_peak); "of roofline" is decode tokens/s over batch / that time (the
attention over the cache, sampling and the Python around them are what is left). Both engines decode greedily for
exactly --new tokens (no early stop).
A third row, "ours, compiled", uses `Engine(compile=True)` (its compilations are not timed).
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import torch

from minimind import Transformer, load_model, load_tokenizer, preset
from minimind.infer import Engine, SamplingParams
from minimind.perf import measure_matmul_peak

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


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


def ours(engine: Engine, prompts, new: int) -> tuple[float, float]:
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
    parser.add_argument("--presets", nargs="+", default=["minimind-3", "minimind-3-moe"],
                        help="presets of the fresh models")
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--dtypes", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"],
                        help="the weights' dtypes (both engines)")
    parser.add_argument("--no-compile", action="store_true", help="leave out the compiled rows")
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        directories = args.model or []
        if not directories:
            for name in args.presets:
                torch.manual_seed(0)
                directories.append(Transformer(preset(name)).save(Path(tmp) / name, tokenizer=load_tokenizer()))
        bandwidth = read_bandwidth("cpu")
        peaks = {name: measure_matmul_peak(DTYPES[name], "cpu") for name in args.dtypes}
        print(f"torch {torch.__version__} · {torch.get_num_threads()} threads · prompt {args.prompt_len} "
              f"· {args.new} new tokens · read bandwidth {bandwidth / 1e9:.1f} GB/s · matmul peak "
              + ", ".join(f"{name} {peak / 1e9:.0f} GFLOP/s" for name, peak in peaks.items()) + "\n")
        print("| model | dtype | batch | engine | prefill tok/s | decode tok/s | bandwidth use | roofline tok/s "
              "| of roofline | ours / transformers |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for directory, name in itertools.product(map(Path, directories), args.dtypes):
            dtype, peak = DTYPES[name], peaks[name]
            model = load_model(directory, device="cpu", dtype=dtype)
            tokenizer = load_tokenizer(directory)
            hf_model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype).eval()
            engines = {"ours": Engine(model, tokenizer)}
            if not args.no_compile:
                engines["ours, compiled"] = Engine(model, tokenizer, compile=True)
            for batch in args.batches:
                prompts = [[1 + (i * 7 + t) % 6000 for t in range(args.prompt_len)] for i in range(batch)]
                runs = {"transformers": theirs(hf_model, prompts, args.new)}
                runs.update((engine_name, ours(engine, prompts, args.new)) for engine_name, engine in engines.items())
                steps = args.new - 1
                # what one step reads: the active weights (top-k experts) for one row, all of them for a batch
                params = model.num_params(active=batch == 1)
                weight_bytes = params * model.lm_head.weight.element_size()
                roofline = batch / max(weight_bytes / bandwidth, 2 * params * batch / peak)
                rates = {engine_name: batch * steps / decode for engine_name, (_, decode) in runs.items()}
                for engine_name, (prefill, decode) in runs.items():
                    use = weight_bytes * steps / decode / bandwidth
                    ratio = f"{rates[engine_name] / rates['transformers']:.2f}×"
                    print(f"| {directory.name} | {name} | {batch} | {engine_name} "
                          f"| {batch * args.prompt_len / prefill:,.0f} | {rates[engine_name]:,.1f} | {use:.0%} "
                          f"| {roofline:,.0f} | {rates[engine_name] / roofline:.0%} | {ratio} |", flush=True)

if __name__ == "__main__":
    main()
