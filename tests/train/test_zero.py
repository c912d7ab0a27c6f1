"""DeepSpeed ZeRO as the trainer's strategy, on the CPU (gloo) under torchrun: 2 ranks equal one process, and a
run stopped at a checkpoint resumes to exactly the weights of one that never stopped."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minimind.errors import MiniMindError
from minimind.train.config import load_config
from minimind.train.trainer import train
from minimind.train.zero import ds_config
from tests.train.test_trainer import _cli_args, config, data, metrics, weights  # noqa: F401 (data: a fixture)

pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (make install adds it)")


def torchrun(args: list[str], port: int) -> subprocess.CompletedProcess:
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                           "127.0.0.1", "--master_port", str(port), "-m", "minimind", *args],
                          env=env, capture_output=True, text=True, timeout=300)


def zero_args(root, out, stage: int, max_steps: int, save_every: int = 2) -> list[str]:
    args = _cli_args(root, out, max_steps=max_steps, save_every=save_every)
    return [a for a in args if not a.startswith("log_every")] + ["tokens_per_step=128", "log_every=1",
                                                                 f"deepspeed.stage={stage}"]


@pytest.mark.parametrize("stage, port", [(1, 29541), (2, 29542), pytest.param(3, 29543, marks=pytest.mark.slow)])
def test_zero_on_two_ranks_equals_one_process_and_resumes_exactly(data, tmp_path, stage, port):  # noqa: F811
    single = train(config(data, tmp_path / "single", batch_size=2, tokens_per_step=128, max_steps=6))
    proc = torchrun(zero_args(data, tmp_path / "zero", stage, max_steps=6), port)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = weights(single), weights(tmp_path / "zero" / "model")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    step4 = tmp_path / "zero" / "checkpoints" / "step-000004"
    assert sorted(p.name for p in (step4 / "deepspeed" / "zero").iterdir())[:1] and (step4 / "model").is_dir()

    # stop after 2 steps, then resume to 6: the same weights as the run that never stopped
    proc = torchrun(zero_args(data, tmp_path / "resumed", stage, max_steps=2), port)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = torchrun([*zero_args(data, tmp_path / "resumed", stage, max_steps=6), "--resume"], port)
    assert proc.returncode == 0, proc.stderr[-3000:]
    c = weights(tmp_path / "resumed" / "model")
    assert all(torch.equal(b[k], c[k]) for k in b)
    assert [m["step"] for m in metrics(tmp_path / "resumed")] == [1, 2, 3, 4, 5, 6]


def test_the_deepspeed_config_and_refusals(data, tmp_path):  # noqa: F811
    d = ds_config(load_config(None, ['data.train=["x"]', "deepspeed.stage=3", "deepspeed.offload_params=true"])
                  .deepspeed, micro_batch=4, accumulation=2, grad_clip=1.0, dtype=torch.bfloat16)
    assert d["zero_optimization"] == {"stage": 3, "offload_param": {"device": "cpu"}}
    assert d["train_micro_batch_size_per_gpu"] == 4 and d["gradient_accumulation_steps"] == 2
    assert d["bf16"]["enabled"] and d["gradient_clipping"] == 1.0
    with pytest.raises(MiniMindError, match="offload_params' needs deepspeed.stage=3"):
        load_config(None, ['data.train=["x"]', "deepspeed.stage=2", "deepspeed.offload_params=true"])
    with pytest.raises(MiniMindError, match="runs AdamW without fsdp or compile"):
        load_config(None, ['data.train=["x"]', "deepspeed.stage=2", "fsdp=true"])
    with pytest.raises(MiniMindError, match="launch with torchrun"):
        train(config(data, tmp_path / "one", deepspeed={"stage": 1}))
