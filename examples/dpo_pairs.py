"""DPO demonstration: held-out chosen-over-rejected accuracy of the quickstart SFT model before and after DPO,
overall and by kind of pair.

    python examples/dpo_pairs.py             # after `make demo` and `minimind dpo --config configs/tiny/dpo.yaml`
    python examples/dpo_pairs.py --models runs/quickstart/sft/model runs/tiny/dpo/model
    python examples/dpo_pairs.py --reward runs/tiny/reward/model     # also a reward model's r(chosen) > r(rejected)

A model prefers a pair's chosen answer when logp(chosen) > logp(rejected), the log-probabilities summed over
the answer's tokens (the quantity DPO trains), and also per token. Kinds, as the default data generates them:
wrong_number (a wrong final result), wrong_meaning (another idiom's meaning), padded (the same answer with
filler around it), off_topic (an unrelated reply).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import torch

from minimind.data.formats import read_records
from minimind.model import load_model
from minimind.model.reward import Scorer
from minimind.model.transformer import IGNORE_INDEX, token_logprobs
from minimind.tokenizer import load_tokenizer


def kind(pair: dict) -> str:
    chosen, rejected = pair["chosen"][-1]["content"], pair["rejected"][-1]["content"]
    if chosen in rejected:
        return "padded"
    if "####" in chosen and "####" in rejected:
        return "wrong_number"
    if chosen.split("：")[0] == rejected.split("：")[0] and "：" in chosen:
        return "wrong_meaning"
    return "off_topic"


@torch.no_grad()
def answer_logp(model, tokenizer, messages) -> tuple[float, int]:
    ids, mask = tokenizer.render_chat(messages)
    x, mask = torch.tensor([ids]), torch.tensor([mask])
    labels = torch.where(mask == 1, x, IGNORE_INDEX)
    return token_logprobs(model(x).logits, labels)[:, 1:].sum().item(), int(mask[:, 1:].sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["runs/quickstart/sft/model", "runs/tiny/dpo/model"])
    parser.add_argument("--pairs", default="runs/quickstart/data/eval/dpo.jsonl")
    parser.add_argument("--reward", help="a reward model directory to score the pairs with as well")
    args = parser.parse_args()
    torch.set_num_threads(2)
    pairs = list(read_records(args.pairs, "dpo"))
    results = {}
    for path in args.models:
        model, tokenizer = load_model(path, device="cpu").eval(), load_tokenizer(path)
        wins = defaultdict(lambda: [0, 0, 0])                  # kind → [summed wins, per-token wins, pairs]
        for pair in pairs:
            (c, nc), (r, nr) = (answer_logp(model, tokenizer, pair[side]) for side in ("chosen", "rejected"))
            for k in (kind(pair), "all"):
                wins[k][0] += c > r
                wins[k][1] += c / nc > r / nr
                wins[k][2] += 1
        results[path] = wins
    if args.reward:
        scorer = Scorer.load(args.reward, device="cpu")
        chosen, rejected = (scorer.score([p[side] for p in pairs]) for side in ("chosen", "rejected"))
        wins = defaultdict(lambda: [0, 0, 0])
        for pair, c, r in zip(pairs, chosen, rejected, strict=True):
            for k in (kind(pair), "all"):
                wins[k][0] += c > r
                wins[k][1] += c > r
                wins[k][2] += 1
        results[f"reward model {args.reward}"] = wins
    kinds = sorted(results[args.models[0]], key=lambda k: (k == "all", k))
    print("| kind | pairs | " + " | ".join(f"{m} (sum / per token)" for m in results) + " |")
    print("|---|---|" + "---|" * len(results))
    for k in kinds:
        n = results[args.models[0]][k][2]
        cells = [f"{w[k][0] / n:.1%} / {w[k][1] / n:.1%}" for w in results.values()]
        print(f"| {k} | {n} | " + " | ".join(cells) + " |")
    print(json.dumps({m: {k: v for k, v in w.items()} for m, w in results.items()}))


if __name__ == "__main__":
    main()
