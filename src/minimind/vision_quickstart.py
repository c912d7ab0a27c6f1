"""The vision main job (`minimind quickstart --vision`): from nothing to a model that answers questions about
pictures, on a laptop CPU, with a report of what it learned.

    generated scenes (data/default/scenes.py: train and held-out combinations) → the tower pretrained on the
    pictures' labels (configs/tiny/vision-tower.yaml, train/tower.py) → vision SFT of `mini-v`'s projector and
    decoder from fresh weights, the tower read and frozen (configs/tiny/vision.yaml: captions and questions together)
    → held-out questions, exact match per type against chance (eval/vqa.py) → sample answers on held-out pictures →
    where the answers looked (attention over the image patches) → DIR/report.md
"""

from __future__ import annotations

import json
import platform
import shutil
import time
from pathlib import Path

import torch

import minimind
from minimind.data.default.scenes import build_scenes
from minimind.eval.vqa import attention_map, chance_levels, draw_attention, evaluate_vqa, read_questions
from minimind.model import load_model
from minimind.quickstart import run_summary
from minimind.tokenizer import load_tokenizer
from minimind.train.config import load_config
from minimind.train.trainer import train

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "tiny"
PICTURES = 6          # held-out pictures shown with their answers and attention


def vision_quickstart(out: str | Path, overrides: list[str] = (), pictures: int = 6000,
                      held_out_pictures: int = 600, tower_overrides: list[str] = ()) -> Path:
    """Run the job into `out` (the vision SFT's `overrides` as on the command line; the tower pretraining's
    `tower_overrides`); returns the report's path."""
    out = Path(out)
    timings = {}
    start = time.perf_counter()
    data = out / "data"
    manifest = build_scenes(data, train=pictures, heldout=held_out_pictures)
    timings["data"] = time.perf_counter() - start

    tower = load_config(CONFIGS / "vision-tower.yaml", [
        f"out={out / 'vision-tower'}", f'data.train=["{data / "labels.jsonl"}"]',
        f'data.val=["{data / "labels_heldout.jsonl"}"]', *tower_overrides])
    begin = time.perf_counter()
    train(tower)
    timings["tower"] = time.perf_counter() - begin

    config = load_config(CONFIGS / "vision.yaml", [f"out={out / 'vision-sft'}", f"data.prepared={out / 'prepared'}",
                                                   f"vision.tower={out / 'vision-tower' / 'model'}",
                                                   f'data.train=["{data / "vqa.jsonl"}", "{data / "captions.jsonl"}"]',
                                                   f'data.val=["{data / "captions_heldout.jsonl"}"]', *overrides])
    begin = time.perf_counter()
    train(config)
    timings["training"] = time.perf_counter() - begin

    begin = time.perf_counter()
    model = load_model(out / "vision-sft" / "model", device="cpu")
    tokenizer = load_tokenizer(out / "vision-sft" / "model")
    questions = read_questions(data / "vqa_heldout.jsonl", model.vision.image_size)
    result = evaluate_vqa(model, tokenizer, questions, chance_levels(data / "vqa_heldout.jsonl"),
                          examples=len(questions))
    (out / "vqa.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    pictures = _pictures(model, tokenizer, questions, result["examples"], out / "pictures")
    timings["evaluation"] = time.perf_counter() - begin
    timings["total"] = time.perf_counter() - start

    report = out / "report.md"
    report.write_text(_report(manifest, run_summary(out / "vision-sft" / "metrics.jsonl"), result, pictures, timings,
                              model, run_summary(out / "vision-tower" / "metrics.jsonl")))
    return report


def _pictures(model, tokenizer, questions, answered, folder: Path) -> list[dict]:
    """The first single-image held-out question of each type (up to PICTURES): the picture, the model's answer and
    its attention map, saved under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    shown, seen = [], set()
    for q, a in zip(questions, answered, strict=True):
        if len(q["images"]) != 1 or q["type"] in seen:
            continue
        seen.add(q["type"])
        name = f"{len(shown):02d}-{q['type']}"
        shutil.copyfile(q["files"][0], folder / f"{name}.png")
        weights = attention_map(model, tokenizer, q["question"], q["images"][0])
        draw_attention(q["images"][0], weights, folder / f"{name}-attention.png", title=q["type"])
        shown.append(a | {"image": f"pictures/{name}.png", "attention": f"pictures/{name}-attention.png"})
        if len(shown) == PICTURES:
            break
    return shown


def _percent(e: dict) -> str:
    return f"{100 * e['value']:.1f}% [{100 * e['low']:.1f}, {100 * e['high']:.1f}]"


def _report(manifest, run, result, pictures, timings, model, tower) -> str:
    device = platform.processor() or "CPU"
    v = model.vision
    lines = [
        "# MiniMind-V quickstart report", "",
        f"minimind {minimind.__version__} · torch {torch.__version__} · {device} · {torch.get_num_threads()} threads",
        "", "## Timings", "", "| phase | seconds |", "|---|---|",
        *(f"| {k} | {s:.0f} |" for k, s in timings.items()), "",
        "## Model and data", "",
        f"- `mini-v`: {model.num_params() / 1e6:.2f}M parameters; tower {v.num_hidden_layers} layers × "
        f"{v.hidden_size}, {v.image_size}² pixels in patches of {v.patch_size} → {v.image_tokens} tokens per image; "
        "saved as a stock `LlavaForConditionalGeneration` directory",
        *(f"- `{name}`: {n:,} records" for name, n in manifest["files"].items()),
        "- held out (never in training): " + ", ".join(f"{c} {s}" for c, s in manifest["held_out_shapes"])
        + "; digits " + ", ".join(f"{d} in {c}" for c, d in manifest["held_out_digits"])
        + "; words " + ", ".join(f"{w} in {c}" for c, w in manifest["held_out_words"]), "",
        "## Tower pretraining (labels of the pictures; held-out pictures' accuracy per label)", "",
        "| steps | train loss | " + " | ".join(k.removeprefix("acc_") for k in tower["val_after"] if
                                            k.startswith("acc_")) + " |",
        "|---|---|" + "---|" * sum(k.startswith("acc_") for k in tower["val_after"]),
        f"| {tower['steps']} | {tower['first_loss']:.2f} → {tower['last_loss']:.2f} | "
        + " | ".join(f"{100 * v:.1f}%" for k, v in tower["val_after"].items() if k.startswith("acc_")) + " |", "",
        "## Vision SFT (the tower frozen)", "",
        "| steps | tokens | tokens/s | train loss | held-out caption loss | held-out caption bits/byte |",
        "|---|---|---|---|---|---|",
        f"| {run['steps']} | {run['tokens']:,} | {run['tokens_per_s']:,.0f} | {run['first_loss']:.2f} → "
        f"{run['last_loss']:.2f} | {run['val_before']['loss']:.2f} → {run['val_after']['loss']:.2f} | "
        f"{run['val_before']['bpb']:.2f} → {run['val_after']['bpb']:.2f} |", "",
        "## Held-out questions (exact match, greedy; 95% bootstrap intervals)", "",
        "| type | accuracy | chance | n |", "|---|---|---|---|",
        *(f"| {kind} | {_percent(t['accuracy'])} | {100 * t['chance']:.1f}% | {t['n']} |"
          for kind, t in result["types"].items()),
        f"| all | {_percent(result['accuracy'])} | | {result['n']} |", "",
        "## Held-out pictures: answers and where they looked", "",
        "| picture | question | answer | expected | attention of the answer's first token |", "|---|---|---|---|---|",
    ]
    for p in pictures:
        question = p["question"].splitlines()[-1]
        lines.append(f"| ![]({p['image']}) | {question} | {p['reply']} | {p['answer']} | ![]({p['attention']}) |")
    return "\n".join(lines) + "\n"
