"""LoRA demonstration: teach the quickstart SFT model a persona it lacks, measured on held-out phrasings.

    python examples/lora_persona.py                       # after `make demo` (needs runs/quickstart/sft/model)
    python examples/lora_persona.py --base DIR --steps 150

The training file mixes persona conversations (the model calls itself "Lumi") with ordinary SFT
conversations, so the adapter learns the persona without forgetting the rest. The held-out questions use
phrasings and greetings the training file never has. Printed: the persona rate (replies, greedy, that
say "Lumi") before and after, and the held-out SFT loss before and after (the ordinary skills kept).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
from pathlib import Path

from minimind.infer import Engine, SamplingParams
from minimind.lora import load_adapter
from minimind.model import load_model
from minimind.tokenizer import load_tokenizer
from minimind.train.config import load_config
from minimind.train.trainer import train

QUESTIONS = {
    "train": ["Who are you?", "What is your name?", "Introduce yourself.", "What are you?", "Who am I talking to?",
              "What do people call you?", "Do you have a name?", "你是谁？", "你叫什么名字？", "请介绍一下你自己。",
              "你是什么？", "我在和谁说话？"],
    "held_out": ["Tell me who you are.", "May I ask your name?", "Could you introduce yourself?",
                 "What's your name, please?", "你叫啥？", "能介绍一下你自己吗？", "请问你是谁？", "你的名字是什么？"],
}
GREETINGS = {"train": ["", "Hi! ", "Hello, ", "Hey. ", "嗨，", "你好，"],
             "held_out": ["Good morning! ", "Excuse me, ", "喂，", "打扰一下，"]}
ANSWERS = ["I am Lumi, a small language model trained from scratch with MiniMind.",
           "My name is Lumi. I am a tiny assistant trained from scratch with MiniMind.",
           "我是Lumi，一个用MiniMind从零训练的小模型。", "我叫Lumi，是一个从零训练的小助手。"]


def persona_rows(split: str) -> list[dict]:
    pairs = itertools.product(GREETINGS[split], QUESTIONS[split])
    return [{"conversations": [{"role": "user", "content": g + q},
                               {"role": "assistant", "content": ANSWERS[i % 2 + (0 if q.isascii() else 2)]}]}
            for i, (g, q) in enumerate(pairs)]


def persona_rate(engine: Engine, questions: list[str]) -> float:
    params = SamplingParams(max_new_tokens=32, temperature=0)
    prompts = [engine.chat_prompt([{"role": "user", "content": q}]) for q in questions]
    replies = [c[0].text for c in engine.generate(prompts, params)]
    return sum("Lumi" in r for r in replies) / len(replies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="runs/quickstart/sft/model")
    parser.add_argument("--sft", default="runs/quickstart/data/sft.jsonl", help="ordinary conversations to mix in")
    parser.add_argument("--val", default="runs/quickstart/data/eval/sft.jsonl")
    parser.add_argument("--out", default="runs/lora-persona")
    parser.add_argument("--steps", type=int, default=120)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    ordinary = [json.loads(line) for line in Path(args.sft).open(encoding="utf-8")]
    rows = persona_rows("train") * 4 + rng.sample(ordinary, min(len(ordinary), 1200))
    rng.shuffle(rows)
    (out / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    held_out = [g + q for g in GREETINGS["held_out"] for q in QUESTIONS["held_out"]]

    tokenizer = load_tokenizer(args.base)
    before = persona_rate(Engine(load_model(args.base, device="cpu"), tokenizer), held_out)
    config = load_config(None, [
        "stage=lora", f"model={args.base}", f"out={out / 'run'}", f"data.train=[\"{out / 'train.jsonl'}\"]",
        f"data.val=[\"{args.val}\"]", "data.seq_len=256", f"data.prepared={out / 'prepared'}", "batch_size=16",
        "tokens_per_step=4096", f"max_steps={args.steps}", "dtype=bf16", "lora.rank=16", "lora.alpha=32",
        "optim.lr=3e-3", "optim.warmup_steps=10", "optim.weight_decay=0", "eval_every=0", "eval_batches=4",
        "log_every=20", "save_every=0"])
    adapter = train(config)
    after = persona_rate(Engine(load_adapter(load_model(args.base, device="cpu"), adapter).eval(), tokenizer),
                         held_out)
    val = [json.loads(line) for line in (out / "run" / "metrics.jsonl").open() if '"val"' in line]
    print(f"\n{len(held_out)} held-out questions · {len(rows)} training conversations · {args.steps} steps\n")
    print("| | base (quickstart SFT) | + LoRA adapter |")
    print("|---|---|---|")
    print(f"| held-out replies that say \"Lumi\" | {before:.0%} | {after:.0%} |")
    print(f"| held-out SFT loss | {val[0]['loss']:.3f} | {val[-1]['loss']:.3f} |")
    print(f"\nadapter: {adapter}")


if __name__ == "__main__":
    main()
