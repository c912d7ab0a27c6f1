"""Characters per token of tokenizers side by side, per held-out file and language, with the ratio to a reference.

    python benchmarks/tokenizer.py --reference ../minimind/model                  # the reference's tokenizer folder
    python benchmarks/tokenizer.py --reference REF --tokenizers src/minimind/tokenizer/default runs/tok \\
        --eval runs/data/eval/pretrain.jsonl runs/data/eval/sft.jsonl

More characters per token is better: the same text costs fewer tokens of context and compute. A document with
any Han character counts as Chinese (tokenizer/train.py chars_per_token). The default eval files are the default
data's held-out documents: eval/modern.jsonl holds modern prose alone (Brown corpus samples, product and hotel
reviews), eval/pretrain.jsonl adds Shakespeare, idiom prose and poems, eval/sft.jsonl the conversations.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import tokenizers

from minimind.tokenizer.tokenizer import DEFAULT_DIR, Tokenizer
from minimind.tokenizer.train import chars_per_token, iter_texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, help="folder (or file) of the reference's tokenizer.json")
    parser.add_argument("--tokenizers", nargs="+", default=[str(DEFAULT_DIR)], help="our tokenizer folders")
    parser.add_argument("--eval", nargs="+", default=[f"runs/data/eval/{name}.jsonl"
                                                      for name in ("modern", "pretrain", "sft")])
    args = parser.parse_args()

    reference = Path(args.reference)
    reference = reference / "tokenizer.json" if reference.is_dir() else reference
    candidates = {"reference": Tokenizer(tokenizers.Tokenizer.from_file(str(reference)))}
    candidates |= {Path(t).name if Path(t) != DEFAULT_DIR else "ours (default)": Tokenizer.load(t)
                   for t in args.tokenizers}
    sets = {Path(path).name: list(iter_texts([path])) for path in args.eval}
    names = list(candidates)
    print("| held-out text | language | " + " | ".join(names) + " | "
          + " | ".join(f"{name} / reference" for name in names[1:]) + " |")
    print("|---|---|" + "---|" * (2 * len(names) - 1))
    for name, texts in sets.items():
        ratios = {tok: chars_per_token(t, texts) for tok, t in candidates.items()}
        for language, reference in ratios["reference"].items():
            print(f"| {name} | {language} | " + " | ".join(f"{ratios[tok][language]:.2f}" for tok in names) + " | "
                  + " | ".join(f"{ratios[tok][language] / reference:.2f}×" for tok in names[1:]) + " |")

if __name__ == "__main__":
    main()
