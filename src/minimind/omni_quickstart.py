"""The omni main job (`minimind quickstart --omni`): from nothing to a model that hears and speaks, on a laptop CPU,
with a report of what it learned and what it says.

    speech spoken by espeak-ng (data/default/speech.py: held-out voices, questions and sentences)
    → the omni stage on mini-o from fresh weights (configs/tiny/omni.yaml: recognition, spoken arithmetic,
      text-to-speech and speech-to-speech together; the codec fitted on the answers first)
    → held-out measures beside their baselines (eval/speech.py) → spoken samples (wav) → DIR/report.md
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

import minimind
from minimind.data.default.speech import build_speech
from minimind.eval.speech import evaluate_speech
from minimind.model import load_model
from minimind.quickstart import run_summary
from minimind.tokenizer import load_tokenizer
from minimind.train.config import load_config
from minimind.train.trainer import train

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "tiny"


def omni_quickstart(out: str | Path, overrides: list[str] = (), counts: dict | None = None,
                    heldout: dict | None = None) -> Path:
    """Run the job into `out` (the omni stage's `overrides` as on the command line; `counts` / `heldout` records
    per type, build_speech's defaults when None); returns the report's path."""
    out = Path(out)
    timings = {}
    start = time.perf_counter()
    data = out / "data"
    manifest = build_speech(data, counts, heldout)
    timings["data"] = time.perf_counter() - start

    config = load_config(CONFIGS / "omni.yaml", [f"out={out / 'omni'}", f'data.train=["{data / "speech.jsonl"}"]',
                                                 f'data.val=["{data / "speech_heldout.jsonl"}"]', *overrides])
    begin = time.perf_counter()
    train(config)
    timings["training"] = time.perf_counter() - begin

    begin = time.perf_counter()
    model = load_model(out / "omni" / "model", device="cpu")
    tokenizer = load_tokenizer(out / "omni" / "model")
    result = evaluate_speech(model, tokenizer, data / "speech_heldout.jsonl", data / "speech.jsonl",
                             samples_dir=out / "samples", samples=6)
    (out / "speech.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    timings["evaluation"] = time.perf_counter() - begin
    timings["total"] = time.perf_counter() - start
    report = out / "report.md"
    report.write_text(_report(manifest, run_summary(out / "omni" / "metrics.jsonl"), result, timings, model,
                              sorted(p.name for p in (out / "samples").glob("*.wav"))))
    return report


def _report(manifest, run, result, timings, model, samples: list[str]) -> str:
    device = platform.processor() or "CPU"
    a = model.audio
    train, held, nan = manifest["splits"]["train"], manifest["splits"]["heldout"], float("nan")
    lines = [
        "# MiniMind-O quickstart report", "",
        f"minimind {minimind.__version__} · torch {torch.__version__} · {device} · {torch.get_num_threads()} threads",
        "", "## Timings", "", "| phase | seconds |", "|---|---|",
        *(f"| {k} | {s:.0f} |" for k, s in timings.items()), "",
        "## Model and data", "",
        f"- `mini-o`: {model.num_params() / 1e6:.2f}M parameters: encoder {a.encoder_layers} × {a.encoder_size} "
        f"(12.5 tokens/s), Thinker {model.config.num_hidden_layers} × {model.config.hidden_size}, Talker "
        f"{a.talker_layers} layers reading layer {model.bridge_layer}, {a.codebooks} codebooks × {a.codebook_size} "
        f"units per 80 ms (residual k-means of log-mel, Griffin-Lim)",
        f"- training: {train['records']:,} records, {train['clips']:,} clips, {train['hours']:.2f} h of speech "
        f"({', '.join(f'{k} {n}' for k, n in train['types'].items())})",
        f"- held out: {held['records']:,} records in voices never heard in training (variants "
        f"{', '.join(manifest['voices_held_out'])}; accent {manifest['accent_held_out']}), arithmetic questions "
        "never asked, sentences never said", "",
        "## Training", "",
        "| steps | tokens | tokens/s | train loss | held-out text loss | held-out unit loss |",
        "|---|---|---|---|---|---|",
        f"| {run['steps']} | {run['tokens']:,} | {run['tokens_per_s']:,.0f} | {run['first_loss']:.2f} → "
        f"{run['last_loss']:.2f} | {run['val_before']['text_loss']:.2f} → {run['val_after']['text_loss']:.2f} | "
        f"{run['val_before'].get('unit_loss', nan):.2f} → {run['val_after'].get('unit_loss', nan):.2f} |",
        "", "## Held-out measures (greedy)", "",
        "| measure | language | n | model | baselines |", "|---|---|---|---|---|",
    ]
    for lang, r in result.get("recognition", {}).items():
        lines.append(f"| recognition, {r['unit']} error rate | {lang} | {r['n']} | {r['error_rate']:.3f} | empty "
                     f"transcript 1.000; most frequent training transcript {r['most_frequent_transcript']:.3f} |")
    for lang, r in result.get("arithmetic", {}).items():
        lines.append(f"| spoken arithmetic, accuracy | {lang} | {r['n']} | {100 * r['accuracy']:.1f}% | most "
                     f"frequent answer {100 * r['most_frequent_answer']:.1f}% |")
    for lang, r in result.get("speech_out", {}).items():
        lines.append(f"| its speech, character error rate heard by its own recogniser | {lang} | {r['n']} | "
                     f"{r['cer']:.3f} | silence 1.000; espeak's own audio {r['espeak_original']:.3f}; that audio "
                     f"through the codec {r['codec_round_trip']:.3f} |")
    lines += ["", "Speech out, also: the reply's text was exactly right in " + ", ".join(
        f"{100 * r['text_exact']:.0f}% ({lang})" for lang, r in result.get("speech_out", {}).items())
        + "; every codebook stopped in " + ", ".join(f"{100 * r['finished']:.0f}%" for r in
                                                    result.get("speech_out", {}).values()) + ".", "",
              "## Samples", "", "| task | language | voice | expected | reply |", "|---|---|---|---|---|",
              *(f"| {s['task']} | {s['lang']} | {s['voice']} | {s['reference']} | {s['reply']} |"
                for s in result["samples"]), "",
              "Spoken replies: " + ", ".join(f"[{name}](samples/{name})" for name in samples)]
    return "\n".join(lines) + "\n"
