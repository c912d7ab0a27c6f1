"""The arithmetic drill for the RL demonstrations: worked word problems and calculator tool calls as SFT records.

    python examples/arithmetic_sft_data.py                     # → runs/quickstart/data/sft-arithmetic.jsonl
    minimind sft --config configs/tiny/arithmetic-sft.yaml     # then GRPO / agentic RL start from its model

The 10-minute quickstart model has seen too few tokens to copy numbers from a question into its working (it
writes "8 + 8 = 8" whatever the question), and RL cannot reward a skill that never appears in a sample. This
drill (≈ 20 minutes on a 2-core CPU) teaches the copying; GRPO then raises exact accuracy (docs/rl.md).
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
    parser.add_argument("--seed", default="drill")
    args = parser.parse_args()
    records = (arithmetic_sft(args.problems, f"{args.seed}/arithmetic")
               + tool_use_sft(args.tool_calls, f"{args.seed}/tool_use"))
    random.Random(0).shuffle(records)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    print(f"wrote {len(records)} records to {args.out}")


if __name__ == "__main__":
    main()
