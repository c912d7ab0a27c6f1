"""The report card: checkpoints compared on one suite of tasks, as markdown plus PNG plots.

A RUN_DIR is a model directory, or a run whose stages hold models (`RUN/pretrain/model`, `RUN/sft/model`, …; the
order of the pipeline). Every model is scored on the default data's held-out files:
    bpb          eval/pretrain.jsonl, with the uniform model's bpb as the chance level
    offline MCQ  eval/choice.jsonl (cloze, zero-shot), per task and pooled, with chance
    arithmetic   eval/rl.jsonl, greedy exact match
    tools        the same problems with the calculator: correct answers through error-free tool calls
Each accuracy carries its bootstrap 95% interval.
"""

from __future__ import annotations

import json
from pathlib import Path

from minimind.errors import MiniMindError
from minimind.eval.bpb import bits_per_byte, read_documents
from minimind.eval.choice import evaluate_choice, read_items
from minimind.eval.generative import evaluate_generative, read_problems
from minimind.eval.scoring import scorer_for
from minimind.fileio import atomic_write_text

STAGE_ORDER = ("pretrain", "sft", "lora", "dpo", "reward", "grpo", "ppo", "agent", "distill")


def model_dirs(run_dirs: list[str | Path]) -> list[tuple[str, Path]]:
    """(label, model directory) for each model found, in pipeline order within a run."""
    found = []
    for run in map(Path, run_dirs):
        if (run / "config.json").is_file():
            found.append((run.parent.name if run.name == "model" else run.name, run))
            continue
        if not run.is_dir():
            raise MiniMindError(f"{run}: no such directory")
        stages = [d for d in sorted(run.iterdir()) if (d / "model" / "config.json").is_file()]
        stages.sort(key=lambda d: STAGE_ORDER.index(d.name) if d.name in STAGE_ORDER else len(STAGE_ORDER))
        if not stages:
            raise MiniMindError(f"{run}: neither a model directory nor a run with stage/model directories")
        found += [(f"{run.name}/{d.name}" if len(run_dirs) > 1 else d.name, d / "model") for d in stages]
    return found


def evaluate_model(model_dir: Path, data_dir: Path, problems: int = 100, window: int = 2048,
                   device: str | None = None, kernels: str = "auto") -> dict:
    from minimind.model import load_model
    from minimind.tokenizer import load_tokenizer, tokenizer_dir

    model = load_model(model_dir, device=device, kernels=kernels)
    tokenizer = load_tokenizer(tokenizer_dir(model_dir))
    scorer = scorer_for(model, tokenizer, window=window)
    out = {}
    eval_dir = data_dir / "eval"
    if (eval_dir / "pretrain.jsonl").is_file():
        out["bpb"] = bits_per_byte(scorer, read_documents(eval_dir / "pretrain.jsonl"))
    if (eval_dir / "choice.jsonl").is_file():
        out["choice"] = evaluate_choice(scorer, read_items(eval_dir / "choice.jsonl"))
    if (eval_dir / "rl.jsonl").is_file():
        records = read_problems(eval_dir / "rl.jsonl", problems)
        out["arithmetic"] = evaluate_generative(model, tokenizer, records)
        out["tools"] = evaluate_generative(model, tokenizer, records, agent=True)
    if not out:
        raise MiniMindError(f"{eval_dir}: none of pretrain.jsonl, choice.jsonl, rl.jsonl to evaluate on")
    return out


def write_report(results: dict[str, dict], out_dir: str | Path, title: str = "MiniMind report card") -> Path:
    """report.md, results.json and report.png (accuracies with intervals and chance; bits per byte)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(out_dir / "report.md", f"# {title}\n\n" + markdown(results)
                      + "\n![accuracy and bits per byte](report.png)\n")
    plot(results, out_dir / "report.png")
    return out_dir / "report.md"


def rows(results: dict[str, dict]) -> list[tuple[str, str, dict[str, dict]]]:
    """(key, header, {model: {"value", "low", "high", "chance"}}) for every figure present."""
    def figures(r: dict) -> dict[str, dict]:
        out = {}
        if "bpb" in r:
            out["bpb"] = r["bpb"]["bpb"] | {"chance": r["bpb"]["uniform_bpb"]}
        if "choice" in r:
            out["choice"] = r["choice"]["acc"] | {"chance": r["choice"]["chance"]}
            out |= {task: s["acc"] | {"chance": s["chance"]} for task, s in r["choice"].get("subjects", {}).items()}
        if "arithmetic" in r:
            out["arithmetic"] = r["arithmetic"]["accuracy"] | {"chance": 0.0}
        if "tools" in r:
            out["tools"] = r["tools"]["tool_success"] | {"chance": 0.0}
        return out

    per_model = {model: figures(r) for model, r in results.items()}
    keys = list(dict.fromkeys(k for f in per_model.values() for k in f))
    headers = {"bpb": "bits/byte ↓", "choice": "offline MCQ (all)", "arithmetic": "arithmetic exact",
               "tools": "correct via calculator"}
    return [(k, headers.get(k, k), {m: f[k] for m, f in per_model.items() if k in f}) for k in keys]


def markdown(results: dict[str, dict]) -> str:
    columns = rows(results)
    lines = ["| task | chance | " + " | ".join(results) + " |", "|---|---|" + "---|" * len(results)]
    for key, header, values in columns:
        chance = next(iter(values.values()))["chance"]
        cells = [_cell(key, values[m]) if m in values else "–" for m in results]
        lines.append(f"| {header} | {_number(key, chance)} | " + " | ".join(cells) + " |")
    first = next(iter(results.values()))
    items, problems = first.get("choice", {}).get("n"), first.get("arithmetic", {}).get("n")
    notes = ["", "Each figure: value [95% bootstrap interval]. Chance: the uniform model's bits per byte; 1 / options "
             "for multiple choice; 0 for exact answers."]
    if items:
        notes.append(f"Offline MCQ: {items} items of `eval/choice.jsonl`, cloze scoring, zero-shot.")
    if problems:
        notes.append(f"Arithmetic and calculator: the first {problems} problems of `eval/rl.jsonl`, greedy, "
                     "up to 256 new tokens; the calculator run allows 3 turns.")
    return "\n".join(lines + notes) + "\n"


def _number(key: str, value: float) -> str:
    return f"{value:.3f}" if key == "bpb" else f"{100 * value:.1f}%"


def _cell(key: str, v: dict) -> str:
    return f"{_number(key, v['value'])} [{_number(key, v['low'])}, {_number(key, v['high'])}]"


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    columns = rows(results)
    accuracy = [c for c in columns if c[0] != "bpb"]
    bpb = [c for c in columns if c[0] == "bpb"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [4, 1]})
    width = 0.8 / max(1, len(results))
    for i, model in enumerate(results):
        for ax, cols in ((axes[0], accuracy), (axes[1], bpb)):
            xs = [j for j, c in enumerate(cols) if model in c[2]]
            v = [cols[j][2][model] for j in xs]
            if not v:
                continue
            mid = np.array([x["value"] for x in v])
            err = np.array([[m - x["low"] for m, x in zip(mid, v, strict=True)],
                            [x["high"] - m for m, x in zip(mid, v, strict=True)]])
            ax.bar(np.array(xs) + (i - (len(results) - 1) / 2) * width, mid, width, yerr=err, capsize=3,
                   label=model)
    for ax, cols in ((axes[0], accuracy), (axes[1], bpb)):
        for j, (_, _, values) in enumerate(cols):
            chance = next(iter(values.values()))["chance"]
            ax.hlines(chance, j - 0.45, j + 0.45, colors="black", linestyles="dashed", linewidth=1)
        ax.set_xticks(range(len(cols)), [c[1] for c in cols], rotation=20, ha="right", fontsize=8)
    axes[0].set_ylabel("accuracy (dashed: chance)")
    axes[1].set_ylabel("bits per byte (dashed: uniform)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
