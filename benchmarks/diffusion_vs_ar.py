"""The autoregressive and the masked-diffusion model side by side at equal training compute, on the default data.

    python benchmarks/diffusion_vs_ar.py [--out runs/dlm] [--data runs/quickstart/data]

Three `mini` models, each trained for the main job's 400 pretraining + 300 SFT steps of 4,096 tokens
(configs/tiny/pretrain.yaml, sft.yaml: the same tokens, the same FLOPs per token):

    ar          pretrain → SFT, next-token prediction (the main job)
    dlm         pretrain → SFT, both objective=diffusion (from nothing)
    a2d         the ar pretrain → SFT with objective=diffusion (MiniMind-dLM's route: adapt an AR model)

Then, for each: held-out bits per byte of the pretrained model on eval/pretrain.jsonl (exact for ar; for a
diffusion model the ELBO's upper bound with its Monte-Carlo standard error), the SFT validation figure on
eval/sft.jsonl's answers (the trainer's), greedy answers to a few prompts, and generation speed at batch 1 (64 new
tokens after the chat prompt; the diffusion sampler at 1 and at 4 tokens per denoising step). Prints a markdown
table (docs/diffusion.md) and writes OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from minimind.data.default.build import build_default
from minimind.eval.bpb import bits_per_byte, read_documents
from minimind.eval.scoring import scorer_for
from minimind.infer import DiffusionParams, SamplingParams, engine_for
from minimind.model import load_model
from minimind.quickstart import run_summary
from minimind.tokenizer import load_tokenizer
from minimind.train.config import load_config
from minimind.train.trainer import train

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tiny"
PROMPTS = ["Hello! Who are you?", "What is 12 plus 30?", "你好", "What does the idiom 画蛇添足 mean?"]
NEW_TOKENS = 64


def run(stage: str, out: Path, data: Path, model: str | None, objective: str) -> Path:
    train_file, val_file = data / f"{stage}.jsonl", data / "eval" / f"{stage}.jsonl"
    overrides = [f"out={out}", f'data.train=["{train_file}"]', f'data.val=["{val_file}"]',
                 f"data.prepared={out.parent / 'prepared'}", f"objective={objective}"]
    if model:
        overrides.append(f"model={model}")
    if not (out / "model" / "config.json").is_file():
        train(load_config(CONFIGS / f"{stage}.yaml", overrides))
    return out / "model"


def speed(engine, prompt: list[int], params: SamplingParams) -> tuple[float, str]:
    """(new tokens per second, the answer) for one greedy generation of NEW_TOKENS (ends ignored)."""
    engine.generate([prompt], SamplingParams(max_new_tokens=4, temperature=0, ignore_eos=True))    # warm-up
    start = time.perf_counter()
    out = engine.generate([prompt], params)[0][0]
    return len(out.token_ids) / (time.perf_counter() - start), out.text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/dlm")
    parser.add_argument("--data", default="runs/quickstart/data", help="the default data (built here if missing)")
    parser.add_argument("--mc-samples", type=int, default=16, help="ELBO draws for the diffusion bounds")
    args = parser.parse_args()
    torch.manual_seed(0)
    out, data = Path(args.out), Path(args.data)
    if not (data / "pretrain.jsonl").is_file():
        build_default(data)

    begin = time.perf_counter()
    ar_pre = run("pretrain", out / "ar-pretrain", data, None, "causal")
    dlm_pre = run("pretrain", out / "dlm-pretrain", data, None, "diffusion")
    models = {"ar": (ar_pre, run("sft", out / "ar-sft", data, str(ar_pre), "causal")),
              "dlm": (dlm_pre, run("sft", out / "dlm-sft", data, str(dlm_pre), "diffusion")),
              "a2d": (ar_pre, run("sft", out / "a2d-sft", data, str(ar_pre), "diffusion"))}
    training = time.perf_counter() - begin

    tokenizer = load_tokenizer()
    documents = read_documents(data / "eval" / "pretrain.jsonl")
    results = {}
    for name, (pretrained, chat) in models.items():
        model = load_model(pretrained, device="cpu")
        r = {"pretrain_bpb": bits_per_byte(scorer_for(model, tokenizer, window=256, samples=args.mc_samples),
                                           documents)}
        r["sft_val"] = run_summary(chat.parent / "metrics.jsonl")["val_after"]
        r["train_tokens_per_s"] = {stage: run_summary(d.parent / "metrics.jsonl")["tokens_per_s"]
                                   for stage, d in (("pretrain", pretrained), ("sft", chat))}
        model = load_model(chat, device="cpu")
        greedy = SamplingParams(max_new_tokens=NEW_TOKENS, temperature=0)
        settings = {"": None} if not model.config.is_diffusion else {
            "1 token/step": DiffusionParams(block_length=32, steps=32),
            "4 tokens/step": DiffusionParams(block_length=32, steps=8)}
        r["answers"], r["speed"] = {}, {}
        for label, diffusion in settings.items():
            engine = engine_for(model, tokenizer, diffusion=diffusion)
            r["answers"][label] = {p: engine.chat([{"role": "user", "content": p}], greedy)[0][1].content
                                   for p in PROMPTS}
            prompt = engine.chat_prompt([{"role": "user", "content": PROMPTS[0]}])
            r["speed"][label] = speed(engine, prompt, SamplingParams(max_new_tokens=NEW_TOKENS, temperature=0,
                                                                     ignore_eos=True))[0]
        results[name] = r

    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"training {training:.0f} s (cached runs count 0) · torch {torch.__version__} · "
          f"{torch.get_num_threads()} threads\n")
    print("| model | pretrained: held-out bits/byte | SFT: val bits/byte (answers) | training tokens/s (pretrain, "
          "SFT) | generation tokens/s (batch 1, 64 tokens) |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        b = r["pretrain_bpb"]
        pre = (f"≤ {b['bpb']['value']:.3f} ± {b['stderr']:.3f} (bound)" if b.get("bound")
               else f"{b['bpb']['value']:.3f} (exact)")
        val = r["sft_val"]
        sft = f"≤ {val['bpb_bound']:.3f} (bound)" if "bpb_bound" in val else f"{val['bpb']:.3f} (exact)"
        tps = " · ".join(f"{v:,.0f}" for v in r["train_tokens_per_s"].values())
        gen = " · ".join(f"{v:.0f}{f' ({k})' if k else ''}" for k, v in r["speed"].items())
        print(f"| {name} | {pre} | {sft} | {tps} | {gen} |")
    for name, r in results.items():
        for label, answers in r["answers"].items():
            print(f"\n{name}{f' ({label})' if label else ''}:")
            for prompt, answer in answers.items():
                print(f"  {prompt!r} → {answer[:120]!r}")


if __name__ == "__main__":
    main()
