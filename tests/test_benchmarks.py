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
