#!/usr/bin/env bash
# The GPU checks in one command, for a session that is lent a GPU (not yet run on one; four compiled runs and the
# model tests, expected well under the device's 10-minute limit per command):
#   1. the model tests on the GPU machine's torch, the CUDA-only ones among them (flex attention's gradients on
#      packed rows, with and without activation checkpointing);
#   2. training tokens/s, MFU and peak memory, bf16 and compiled, for minimind-3 and minimind-3-moe at sequence 2048
#      × 16 rows, plain causal rows and packed rows of 8 documents (flex attention). MFU counts attention over the
#      whole row, so for packed rows it overstates the work: compare their tokens/s;
#   3. the performance issue's targets: minimind-3 at 2048 on causal rows ≥ 45% MFU, with the measured figure,
#      and the Zero recipe's time projected from that rate (well under an hour).
# The package is imported from src/ and nothing is installed: the machine's python3 needs torch, numpy, pyyaml,
# safetensors, tokenizers, tqdm and pytest (the H200 image has them).
#
#     bash benchmarks/gpu_check.sh                                   # on the GPU machine; results in runs/gpu-check
#     DEVICE=cpu PRESETS=tiny SEQ=128 BATCH=2 STEPS=1 bash benchmarks/gpu_check.sh   # a smoke test anywhere
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
PRESETS=${PRESETS:-minimind-3 minimind-3-moe}
SEQ=${SEQ:-2048}
BATCH=${BATCH:-16}
STEPS=${STEPS:-10}
OUT=${OUT:-runs/gpu-check}
mkdir -p "$OUT"

"$PYTHON" -c "import torch; print('torch', torch.__version__, '·', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')"
"$PYTHON" -m pytest -q -p no:cacheprovider tests/model 2>&1 | tee "$OUT/tests.txt" | tail -5 \
  || echo "some tests failed: see $OUT/tests.txt (the measurements run anyway)"

: > "$OUT/train.jsonl"
for documents in 1 8; do
  # shellcheck disable=SC2086
  "$PYTHON" benchmarks/model_step.py --device "$DEVICE" --presets $PRESETS --seq "$SEQ" --batch "$BATCH" \
    --steps "$STEPS" --compile --documents "$documents" --json | tee -a "$OUT/train.jsonl"
done

"$PYTHON" - "$OUT/train.jsonl" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print("\n| preset | documents per row | tokens/s | MFU | peak memory |\n|---|---|---|---|---|")
for r in rows:
    print(f"| {r['preset']} | {r['documents']} | {r['tokens_per_s']:,.0f} | {r['mfu']:.1%} "
          f"| {r['peak_memory'] / 2**30:.2f} GiB |")
sys.path.insert(0, "benchmarks")
from suite import ZERO_TOKENS, zero_recipe_hours
for r in rows:
    if r["preset"] == "minimind-3" and r["documents"] == 1:          # the target's sequence is 2048 (SEQ's default)
        print(f"target ≥ 45% MFU, minimind-3 at {r['seq']}: {r['mfu']:.1%} "
              f"({'met' if r['mfu'] >= 0.45 else 'not met'})")
        print(f"the Zero recipe ({sum(ZERO_TOKENS.values()) / 1e9:.2f}B tokens, pretraining then SFT) at "
              f"{r['tokens_per_s']:,.0f} tokens/s: "
              f"{60 * zero_recipe_hours(r['tokens_per_s']):.1f} min; the recipes' two epochs each: "
              f"{60 * zero_recipe_hours(r['tokens_per_s'], 2):.1f} min (target: well under an hour)")
EOF
