"""The arithmetic drill for the RL demonstrations: worked word problems and calculator tool calls as SFT records.

    python examples/arithmetic_sft_data.py                     # → runs/quickstart/data/sft-arithmetic.jsonl
                                                               #   and eval/rl-heldout.jsonl (1,000 problems)
    minimind sft --config configs/tiny/arithmetic-sft.yaml     # then GRPO / agentic RL start from its model

The 10-minute quickstart model has seen too few tokens to copy numbers from a question into its working (it
writes "8 + 8 = 8" whatever the question), and RL cannot reward a skill that never appears in a sample. This
drill (3,000 steps, 21.5 minutes on a 2-core CPU) teaches the copying.

It also teaches two ways of answering each kind of prompt, so that the policy has a choice for RL to make:
half of the word problems are answered with their working and half with the result only (`--direct`), and half
of the prompts that offer the calculator are answered by calling it and half by hand (`--by-hand`). Both ways
are right in the data, but a 4.6M model gets more answers right with the working written out, and far more
through the calculator; GRPO and agentic RL learn that from the rewards alone (docs/rl.md).
Records come from the default data's generators under their own seeds. The larger held-out set for the
before/after figures (`--heldout`) leaves out every question that the drill, the RL prompts (`rl.jsonl`) or
`eval/rl.jsonl` contain, so a gain on it is not memorised prompts.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from minimind.data.default.generators import arithmetic_rl, arithmetic_sft, tool_use_sft
from minimind.data.formats import read_records
from minimind.fileio import atomic_write_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/quickstart/data/sft-arithmetic.jsonl")
    parser.add_argument("--problems", type=int, default=80000, help="word problems")
    parser.add_argument("--tool-calls", type=int, default=20000, help="conversations offering the calculator")
    parser.add_argument("--direct", type=float, default=0.5, help="fraction of word problems answered without working")
    parser.add_argument("--by-hand", type=float, default=0.5,
                        help="fraction of calculator prompts answered without calling it")
    parser.add_argument("--heldout", type=int, default=1000, help="held-out RL problems for before/after figures")
    parser.add_argument("--seed", default="drill")
    args = parser.parse_args()
    records = (arithmetic_sft(args.problems, f"{args.seed}/arithmetic", direct=args.direct)
               + tool_use_sft(args.tool_calls, f"{args.seed}/tool_use", by_hand=args.by_hand))
    random.Random(0).shuffle(records)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    print(f"wrote {len(records)} records to {out}")

    data = out.parent
    seen = {r["conversations"][0]["content"] for r in records}
    for name in ("rl.jsonl", "eval/rl.jsonl"):
        if (data / name).exists():
            seen |= {r["messages"][-1]["content"] for r in read_records(data / name, "rl")}
    heldout = [r for r in arithmetic_rl(2 * args.heldout, f"{args.seed}/heldout")
               if r["conversations"][0]["content"] not in seen][:args.heldout]
    atomic_write_text(data / "eval/rl-heldout.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                                              for r in heldout))
    print(f"wrote {len(heldout)} held-out problems (none in the drill, rl.jsonl or eval/rl.jsonl) to "
          f"{data / 'eval/rl-heldout.jsonl'}")


if __name__ == "__main__":
    main()
