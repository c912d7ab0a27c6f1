"""The arithmetic drill for the RL demonstrations: worked word problems and calculator tool calls as SFT records.

    python examples/arithmetic_sft_data.py                     # → runs/quickstart/data/sft-arithmetic.jsonl
    minimind sft --config configs/tiny/arithmetic-sft.yaml     # then GRPO / agentic RL start from its model

The 10-minute quickstart model has seen too few tokens to copy numbers from a question into its working (it
writes "8 + 8 = 8" whatever the question), and RL cannot reward a skill that never appears in a sample. This
drill (≈ 25 minutes on a 2-core CPU) teaches the copying.

It also teaches two ways of answering each kind of prompt, so that the policy has a choice for RL to make:
half of the word problems are answered with their working and half with the result only (`--direct`), and half
of the prompts that offer the calculator are answered by calling it and half by hand (`--by-hand`). Both ways
are right in the data, but a 4.6M model gets more answers right with the working written out, and far more
through the calculator; GRPO and agentic RL learn that from the rewards alone (docs/rl.md).
Records come from the default data's generators under their own seeds, so they are not the held-out
problems (a coincidental repeat of the same numbers is possible).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from minimind.data.default.generators import arithmetic_sft, tool_use_sft
from minimind.fileio import atomic_write_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/quickstart/data/sft-arithmetic.jsonl")
    parser.add_argument("--problems", type=int, default=40000, help="worked word problems")
    parser.add_argument("--tool-calls", type=int, default=10000, help="conversations calling the calculator")
    parser.add_argument("--direct", type=float, default=0.5, help="fraction of word problems answered without working")
    parser.add_argument("--by-hand", type=float, default=0.5,
                        help="fraction of calculator prompts answered without calling it")
    parser.add_argument("--seed", default="drill")
    args = parser.parse_args()
    records = (arithmetic_sft(args.problems, f"{args.seed}/arithmetic", direct=args.direct)
               + tool_use_sft(args.tool_calls, f"{args.seed}/tool_use", by_hand=args.by_hand))
    random.Random(0).shuffle(records)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    print(f"wrote {len(records)} records to {args.out}")


if __name__ == "__main__":
    main()
