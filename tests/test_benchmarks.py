"""The benchmark scripts run and report sane figures (speed itself is measured by them, never asserted here)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
ENV = os.environ | {"OMP_NUM_THREADS": "1"}


def test_model_step_json_reports_a_consistent_measurement():
    out = subprocess.run([sys.executable, "benchmarks/model_step.py", "--presets", "tiny-moe", "--seq", "32",
                          "--steps", "1", "--dtype", "fp32", "--threads", "1", "--json", "--checkpointing"],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, check=True)
    r = json.loads(out.stdout)
    assert r["preset"] == "tiny-moe" and r["checkpointing"] and r["tokens"] == 32
    assert r["active"] < r["total"]                               # top-2 of 4 experts
    assert r["tokens_per_s"] == pytest.approx(32 / r["seconds"])
    assert r["mfu"] == pytest.approx(r["tokens_per_s"] * r["flops_per_token"] / r["peak_flops"])
    assert 0 < r["mfu"] < 1 and r["peak_flops"] > 1e9 and r["peak_memory"] > 2**20


def test_packed_positions_lay_out_documents_as_the_loader_does():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from model_step import packed_positions

    positions = packed_positions(3, 100, 8)
    assert positions.shape == (3, 100)
    assert ((positions == 0).sum(-1) == 8).all() and (positions[:, 0] == 0).all()
    steps = positions[:, 1:] - positions[:, :-1]
    assert ((steps == 1) | (positions[:, 1:] == 0)).all()          # 0, 1, 2, … restarting at each document


@pytest.mark.slow
def test_suite_quick_writes_every_table(tmp_path):
    subprocess.run([sys.executable, "benchmarks/suite.py", "--quick", "--threads", "1", "--out", str(tmp_path)],
                   cwd=ROOT, env=ENV, capture_output=True, text=True, check=True)
    text = (tmp_path / "performance.md").read_text()
    for title in ("presets × sequence length", "MoE against dense", "reference's CPU measurement",
                  "activation checkpointing", "Packed rows", "Zero recipe, projected", "Decoding"):
        assert title in text
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["train"]) == 2 * 2 * 2 and len(results["reference"]) == 4
    assert [r["documents"] for r in results["packed"]] == [8]
    assert {r["batch"] for r in results["decode"]} == {1, 16}


def test_clean_benchmark_scores_planted_duplicates_and_low_quality_text(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from pydoc_data.topics import topics  # English prose on every Python

    from clean import LOW_QUALITY, VARIANTS, quality_corpus, score

    from minimind.data.clean import CleanConfig, clean

    rng = __import__("random").Random(0)
    common = [chr(0x4E00 + i) for i in range(3000)]
    pool = {"en": [text[:1500] for text in topics.values() if len(text) > 600][:30],
            "zh": ["".join(rng.choice("的了是在不和有") if rng.random() < 0.15 else rng.choice(common)
                           for _ in range(300)) for _ in range(30)]}
    records = quality_corpus(pool, 2, 0, other=["Der schnelle braune Fuchs springt über den faulen Hund. " * 4])
    assert len(records) == 2 * (2 * 2 * len(VARIANTS) + 3 * 2 + 2 * len(LOW_QUALITY)) - 2
    path = tmp_path / "planted.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    clean([path], tmp_path / "out", CleanConfig(workers=1), log=lambda _: None)
    result = score(tmp_path / "out", records)
    assert result["precision"] == 1.0 and result["recall"]["en exact"] == result["recall"]["zh exact"] == 1.0
    assert result["recall"]["en edit_20%"] < 1 and result["rules"]["en other_language"]["recall"] == 1.0
    assert result["rules"]["zh symbols"] == {"recall": 1.0, "rules": {"symbol_ratio": 2}}
    assert result["false_removals"]["en"]["documents"] == 2 * len(VARIANTS) + 6
