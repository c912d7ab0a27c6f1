"""The main job: from nothing to a chatting model on a laptop CPU, with a report of what it learned.

    default data (pinned registry packages + generators) → the default tokenizer → pretrain
    (configs/tiny/pretrain.yaml: the 4.6M `mini` model) → SFT of it (configs/tiny/sft.yaml) → held-out loss
    and bits per byte before and after each stage → sample continuations and chats → the report card of both
    models (bits per byte, the offline benchmark, arithmetic, calculator use: DIR/report-card/) → DIR/report.md
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

import minimind
from minimind.data.default import build_default
from minimind.eval.report import evaluate_model, markdown, write_report
from minimind.model import load_model
from minimind.tokenizer import iter_texts, load_tokenizer
from minimind.tokenizer.train import chars_per_token
from minimind.train.config import load_config
from minimind.train.trainer import sample, train

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "tiny"
CONTINUATIONS = ["To be, or not to be", "ROMEO.\nO", "成语“一心一意”"]
CHATS = ["Hello! Who are you?", "What does the idiom 画蛇添足 mean?", "你好"]
ARITHMETIC_QUESTIONS = 100


def quickstart(out: str | Path) -> Path:
    out = Path(out)
    timings = {}
    start = time.perf_counter()
    manifest = build_default(out / "data")
    timings["data"] = time.perf_counter() - start

    tokenizer = load_tokenizer()
    compression = {name: chars_per_token(tokenizer, iter_texts([out / "data" / "eval" / f"{name}.jsonl"]))
                   for name in ("pretrain", "modern") if (out / "data" / "eval" / f"{name}.jsonl").is_file()}

    runs = {}
    for stage in ("pretrain", "sft"):
        data = out / "data"
        train_file, val_file = data / f"{stage}.jsonl", data / "eval" / f"{stage}.jsonl"
        overrides = [f"out={out / stage}", f'data.train=["{train_file}"]', f'data.val=["{val_file}"]',
                     f"data.prepared={out / 'prepared'}"]
        if stage == "sft":
            overrides.append(f"model={out / 'pretrain' / 'model'}")
        config = load_config(CONFIGS / f"{stage}.yaml", overrides)
        begin = time.perf_counter()
        train(config)
        timings[stage] = time.perf_counter() - begin
        runs[stage] = run_summary(out / stage / "metrics.jsonl")

    begin = time.perf_counter()
    pretrained = load_model(out / "pretrain" / "model", device="cpu")
    chat_model = load_model(out / "sft" / "model", device="cpu")
    continuations = {p: sample(pretrained, tokenizer, p, chat=False) for p in CONTINUATIONS}
    chats = {p: sample(chat_model, tokenizer, p, chat=True, max_new_tokens=64) for p in CHATS}
    card = {stage: evaluate_model(out / stage / "model", out / "data", problems=ARITHMETIC_QUESTIONS, device="cpu")
            for stage in ("pretrain", "sft")}
    write_report(card, out / "report-card", title="MiniMind quickstart report card")
    timings["evaluation"] = time.perf_counter() - begin
    timings["total"] = time.perf_counter() - start

    report = out / "report.md"
    report.write_text(_report(manifest, compression, runs, timings, continuations, chats, card))
    return report


def run_summary(path: Path) -> dict:
    lines = [json.loads(line) for line in path.open()]
    train_lines = [m for m in lines if m["kind"] == "train"]
    val = [m for m in lines if m["kind"] == "val"]
    timed = train_lines[1:] or train_lines           # the first window includes start-up
    return {"first_loss": train_lines[0]["loss"], "last_loss": train_lines[-1]["loss"],
            "steps": train_lines[-1]["step"], "tokens": train_lines[-1]["tokens"],
            "tokens_per_s": sum(m["tokens_per_s"] for m in timed) / len(timed),
            "mfu": sum(m.get("mfu", 0) for m in timed) / len(timed) if "mfu" in timed[-1] else None,
            "val_before": val[0], "val_after": val[-1]}


def _report(manifest, compression, runs, timings, continuations, chats, card) -> str:
    device = "CUDA " + torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "CPU"
    lines = [
        "# MiniMind quickstart report", "",
        f"minimind {minimind.__version__} · torch {torch.__version__} · {device} · {torch.get_num_threads()} threads",
        "", "## Timings", "", "| phase | seconds |", "|---|---|",
        *(f"| {k} | {v:.0f} |" for k, v in timings.items()), "",
        "## Data", "",
        *(f"- `{name}`: {c['records']:,} records, {c['chars']:,} characters" for name, c in manifest["files"].items()),
        "- packages: " + (", ".join(f"{n}=={p['version']}" for n, p in manifest["packages"].items()) or "none")
        + (f" (fetch failed: {manifest['fetch_error']})" if manifest["fetch_error"] else ""),
        *([f"- the packages' text cleaned: {manifest['clean']['kept']:,} of {manifest['clean']['records']:,} units "
           "kept (`data/clean/report.md`)"] if manifest.get("clean") else []),
        "- default tokenizer, characters per token on held-out text: "
        + "; ".join(f"eval/{name}.jsonl " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items())
                    for name, ratios in compression.items()), "",
        "## Training", "",
        "| stage | steps | tokens | tokens/s | MFU | train loss | held-out loss | held-out bits/byte |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for stage, r in runs.items():
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "–"
        lines.append(f"| {stage} | {r['steps']} | {r['tokens']:,} | {r['tokens_per_s']:,.0f} | {mfu} "
                     f"| {r['first_loss']:.2f} → {r['last_loss']:.2f} "
                     f"| {r['val_before']['loss']:.2f} → {r['val_after']['loss']:.2f} "
                     f"| {r['val_before']['bpb']:.2f} → {r['val_after']['bpb']:.2f} |")
    lines += ["", "Loss curves: `pretrain/loss_curve.png`, `sft/loss_curve.png`.", "",
              "## Continuations (pretrained model, greedy)", ""]
    lines += [f"- **{p!r}** → {t!r}" for p, t in continuations.items()]
    lines += ["", "## Chats (SFT model, greedy, thinking off)", ""]
    lines += [f"- **{p}** → {t!r}" for p, t in chats.items()]
    lines += ["", "## Report card (`minimind report`; plots in `report-card/report.png`)", "", markdown(card),
              "Held-out arithmetic, SFT model (greedy):", ""]
    lines += [f"- **{e['prompt']}** → {e['output'][-1]!r} (expected {e['answer']})"
              for e in card["sft"]["arithmetic"]["examples"][:3]]
    return "\n".join(lines) + "\n"
