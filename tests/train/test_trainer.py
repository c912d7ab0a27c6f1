"""The training loop: learning, masking, accumulation, resume after SIGKILL, DDP, configs, the NaN guard."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minimind.errors import MiniMindError
from minimind.train.config import TrainConfig, load_config
from minimind.train.registry import STAGES
from minimind.train.stages import LanguageModelling, Loss
from minimind.train.trainer import train

WORDS = "the king speaks of love and war while the queen sings of night and day".split()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    rng = __import__("random").Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 60))) for _ in range(300)]
    (root / "pretrain.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[:280]))
    (root / "val.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[280:]))
    chats = [{"conversations": [{"role": "user", "content": f"add {a} and {b}"},
                                {"role": "assistant", "content": f"{a + b}"}]}
             for a in range(12) for b in range(12)]
    (root / "sft.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats))
    return root


def config(root: Path, out: Path, **changes) -> TrainConfig:
    overrides = {"model": "tiny", "out": str(out), "batch_size": 2, "max_steps": 10, "log_every": 5,
                 "eval_every": 0, "save_every": 0, "dtype": "fp32", "seed": 0,
                 "data": {"train": [str(root / "pretrain.jsonl")], "val": [], "seq_len": 32,
                          "prepared": str(root / "prepared")},
                 "optim": {"lr": 3e-3, "warmup_steps": 2}} | changes
    return load_config(None, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])


def metrics(out: Path, kind: str = "train") -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").open() if json.loads(line)["kind"] == kind]


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(model_dir / "model.safetensors")


def test_loss_decreases_and_everything_is_written(data, tmp_path):
    out = tmp_path / "run"
    model_dir = train(config(data, out, max_steps=30, eval_every=15, log_every=5,
                             data={"train": [str(data / "pretrain.jsonl")], "val": [str(data / "val.jsonl")],
                                   "seq_len": 32, "prepared": str(data / "prepared")},
                             samples=["the king"]))
    losses = [m["loss"] for m in metrics(out)]
    assert losses[-1] < losses[0] - 1.0
    val = metrics(out, "val")
    assert [m["step"] for m in val] == [0, 15, 30] and val[2]["loss"] < val[1]["loss"] < val[0]["loss"]
    assert 0 < val[2]["bpb"] < val[0]["bpb"]
    assert {"config.yaml", "metrics.jsonl", "loss_curve.png", "samples.jsonl", "model", "checkpoints"} <= \
        {p.name for p in out.iterdir()}
    assert (model_dir / "tokenizer.json").is_file() and (model_dir / "config.json").is_file()
    assert load_config(out / "config.yaml", []).max_steps == 30          # the saved config reads back


def test_sft_loss_counts_only_assistant_tokens(data):
    from minimind.tokenizer import load_tokenizer
    from tests.conftest import make_model

    tokenizer, model = load_tokenizer(), make_model()
    chat = [{"role": "user", "content": "add 2 and 3"}, {"role": "assistant", "content": "5"}]
    ids, mask = tokenizer.render_chat(chat)
    x = torch.tensor([ids])
    labels = torch.where(torch.tensor([mask]) == 1, x, -100)
    batch = {"input_ids": x, "labels": labels, "position_ids": torch.arange(len(ids))[None]}
    sft = STAGES["sft"].build(TrainConfig())
    total, _, _ = sft.loss(model, batch)
    loss = total / sft.count(batch)
    logits = model(x).logits[0]
    targets = [t for t in range(1, len(ids)) if mask[t]]                 # by hand: assistant tokens only
    expected = torch.stack([torch.nn.functional.cross_entropy(logits[t - 1], x[0, t]) for t in targets]).mean()
    assert tokenizer.decode([ids[t] for t in targets]) == "<think>\n\n</think>\n\n5<|im_end|>"
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("stage", ["pretrain", "sft"])
def test_accumulation_equals_a_larger_batch(data, tmp_path, stage):
    """4 micro-batches of 1 row give the step 1 batch of 4 rows gives (the loss is normalised by the targets
    of the whole step, so rows with few targets — SFT — weigh what they weigh in one batch)."""
    files = {"train": [str(data / f"{stage}.jsonl")], "val": [], "seq_len": 32, "prepared": str(data / "prepared")}
    a = train(config(data, tmp_path / "a", stage=stage, batch_size=1, tokens_per_step=128, max_steps=4, data=files))
    b = train(config(data, tmp_path / "b", stage=stage, batch_size=4, tokens_per_step=128, max_steps=4, data=files))
    wa, wb = weights(a), weights(b)
    # float rounding differs between the two; AdamW turns it into at most ~1e-5 on an element whose gradient is
    # near zero, while a wrong weighting of rows moves weights by ~lr (3e-3)
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 5e-5


def _run_cli(argv: list[str], **kwargs) -> subprocess.Popen:
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    return subprocess.Popen([sys.executable, "-m", "minimind", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _cli_args(root: Path, out: Path, **changes) -> list[str]:
    cfg = config(root, out, **changes)
    return ["pretrain", f"out={out}", f"max_steps={cfg.max_steps}", "batch_size=2", "dtype=fp32", "log_every=1",
            f"save_every={cfg.save_every}", "eval_every=0", "model=tiny", "keep_last=5",
            f"data.train={json.dumps(cfg.data.train)}", "data.seq_len=32", f"data.prepared={root / 'prepared'}",
            "optim.lr=0.003", "optim.warmup_steps=2"]


def test_sigkill_then_resume_is_bitwise_identical(data, tmp_path):
    full = _run_cli(_cli_args(data, tmp_path / "full", max_steps=16, save_every=4))
    killed = _run_cli(_cli_args(data, tmp_path / "killed", max_steps=16, save_every=4))
    deadline = time.time() + 60
    while not (tmp_path / "killed" / "checkpoints" / "step-000008").is_dir():
        assert killed.poll() is None and time.time() < deadline, killed.communicate()
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "model").exists()
    resumed = _run_cli([*_cli_args(data, tmp_path / "killed", max_steps=16, save_every=4), "--resume"])
    for proc in (full, resumed):
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    a, b = weights(tmp_path / "full" / "model"), weights(tmp_path / "killed" / "model")
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [m["step"] for m in metrics(tmp_path / "killed")]
    assert steps == sorted(set(steps)) and steps[-1] == 16                # no duplicated or ghost steps



@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
@pytest.mark.parametrize("mode, port", [("ddp", 29533), ("fsdp", 29534)])
def test_two_processes_match_one_process(data, tmp_path, mode, port):
    """2 ranks × 1 micro-batch of 2 rows = 1 process × 2 accumulated micro-batches of 2 rows, with the model
    replicated (DDP) or sharded (FSDP2); the FSDP2 run also checkpoints (a gather of the sharded state)."""
    single = train(config(data, tmp_path / "single", batch_size=2, tokens_per_step=128, max_steps=4))
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    args = _cli_args(data, tmp_path / mode, max_steps=4, save_every=2)
    args = [a for a in args if not a.startswith("log_every")] + ["tokens_per_step=128", "log_every=2"]
    args += ["fsdp=true"] if mode == "fsdp" else []
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "minimind", *args],
                          env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = weights(single), weights(tmp_path / mode / "model")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    c = weights(tmp_path / mode / "checkpoints" / "step-000004" / "model")
    assert all(torch.equal(b[k], c[k]) for k in b)
    if mode == "fsdp":              # resume: full weights and optimiser states are sharded again
        more = [a for a in args if not a.startswith("max_steps")] + ["max_steps=6", "--resume"]
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                               "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "minimind", *more],
                              env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert [m["step"] for m in metrics(tmp_path / mode)][-1] == 6


def test_config_typos_are_named(tmp_path):
    with pytest.raises(MiniMindError, match="unknown config key 'optim.lrr'"):
        load_config(None, ["optim.lrr=1e-3", 'data.train=["x"]'])
    with pytest.raises(MiniMindError, match="config key 'batch_size' must be an integer"):
        load_config(None, ["batch_size=big", 'data.train=["x"]'])
    path = tmp_path / "c.yaml"
    path.write_text("stage: pretrain\noptim:\n  decay: cosin\n")
    with pytest.raises(MiniMindError, match=r"c.yaml: config key 'optim.decay' must be one of"):
        load_config(path, [])


def test_nan_guard_skips_then_stops(data, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = LanguageModelling.loss

    def poisoned(self, model, batch):
        calls["n"] += 1
        total, aux, _ = real(self, model, batch)
        return Loss(total * float("nan") if calls["n"] > 2 else total, aux)

    monkeypatch.setattr(LanguageModelling, "loss", poisoned)
    with pytest.raises(MiniMindError, match="3 consecutive non-finite losses"):
        train(config(data, tmp_path / "nan", max_steps=10, max_bad_steps=3))


def test_activation_checkpointing_computes_the_same_step(data, tmp_path):
    a = train(config(data, tmp_path / "a", max_steps=3))
    b = train(config(data, tmp_path / "b", max_steps=3, activation_checkpointing=True))
    wa, wb = weights(a), weights(b)
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-6


def test_activation_checkpointing_per_layer(data, tmp_path):
    """checkpoint_layers / checkpoint_every choose the blocks recomputed in backward (each runs its forward twice)
    and leave the step the same; a layer outside the model or the keys without activation_checkpointing are refused."""
    from minimind.model.transformer import checkpoint_blocks
    from tests.conftest import make_model

    model = make_model().train()
    assert checkpoint_blocks(model, [1]) == [1]
    calls = [0, 0]
    for i, block in enumerate(model.model.layers):
        block.self_attn.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    x = torch.randint(0, 6400, (1, 16))
    model(x, labels=x).loss.backward()
    assert calls == [1, 2]                                   # layer 1 recomputed, layer 0 stored
    a = weights(train(config(data, tmp_path / "a", max_steps=2)))
    b = weights(train(config(data, tmp_path / "b", max_steps=2, activation_checkpointing=True, checkpoint_every=2)))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    with pytest.raises(MiniMindError, match=r"has layers 0–1, not \[5\]"):
        train(config(data, tmp_path / "c", max_steps=1, activation_checkpointing=True, checkpoint_layers=[0, 5]))
    with pytest.raises(MiniMindError, match="set it too"):
        config(data, tmp_path / "d", checkpoint_every=2)


def test_sigterm_checkpoints_and_stops(data, tmp_path):
    proc = _run_cli(_cli_args(data, tmp_path / "run", max_steps=400, save_every=0))
    metrics_file = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 60
    while not (metrics_file.is_file() and metrics_file.read_text().count('"train"') >= 2):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err                           # stopped, not finished
    assert "the checkpoint is saved, continue with --resume" in err and "wrote" not in out
    (saved,) = (tmp_path / "run" / "checkpoints").iterdir()
    step = json.loads((saved / "trainer.json").read_text())["step"]
    assert 2 <= step < 400 and not (tmp_path / "run" / "model").exists()


def test_fresh_run_clears_old_checkpoints_and_resume_past_the_end_is_an_error(data, tmp_path):
    out = tmp_path / "run"
    train(config(data, out, max_steps=4, save_every=2, keep_last=5))
    train(config(data, out, max_steps=1, save_every=1, keep_last=5))
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000001"]
    train(config(data, out, max_steps=4, save_every=4, keep_last=5))
    with pytest.raises(MiniMindError, match="past this run's 2 steps"):
        train(config(data, out, max_steps=2), resume=True)



def test_loader_position_survives_a_world_size_change():
    from minimind.train.trainer import _loader_state

    saved = {"loader": {"epoch": 0, "step": 4, "seed": 0, "world_size": 2}}
    assert _loader_state(saved, world_size=1, steps_per_epoch=20) | {} == saved["loader"] | {"step": 8, "world_size": 1}
    moved = _loader_state(saved, world_size=4, steps_per_epoch=2)     # 8 global batches = one epoch of 4 ranks
    assert (moved["epoch"], moved["step"], moved["world_size"]) == (1, 0, 4)


def test_lora_run_trains_only_the_adapter_and_resumes_exactly(data, tmp_path, capsys):
    """A LoRA run on a base directory: the loss falls, the base is untouched, OUT/adapter is an adapter, a
    checkpoint holds the adapter (not the base), and an interrupted run resumed from it ends identical."""
    from minimind.cli import main
    from minimind.lora import load_adapter, merge
    from tests.conftest import make_model

    base = make_model("tiny").save(tmp_path / "base")
    sft = {"train": [str(data / "sft.jsonl")], "val": [], "seq_len": 32, "prepared": str(data / "prepared")}
    common = dict(stage="lora", model=str(base), data=sft, optim={"lr": 1e-2, "warmup_steps": 2},
                  lora={"rank": 4, "alpha": 8, "targets": ["q_proj", "v_proj"]})
    adapter = train(config(data, tmp_path / "full", max_steps=16, **common))
    assert adapter == tmp_path / "full" / "adapter" and (adapter / "adapter_config.json").is_file()
    losses = [m["loss"] for m in metrics(tmp_path / "full")]
    assert losses[-1] < losses[0]
    assert torch.equal(weights(base)["model.layers.0.self_attn.q_proj.weight"],
                       make_model("tiny").state_dict()["model.layers.0.self_attn.q_proj.weight"])

    import shutil

    train(config(data, tmp_path / "part", max_steps=16, save_every=8, **common))
    shutil.rmtree(tmp_path / "part" / "checkpoints" / "step-000016")      # as if stopped after step 8
    (step,) = (tmp_path / "part" / "checkpoints").iterdir()
    assert sorted(p.name for p in step.iterdir()) == ["adapter", "state.pt", "trainer.json"]
    resumed = train(config(data, tmp_path / "part", max_steps=16, save_every=8, **common), resume=True)
    got, want = (load_file(d / "adapter_model.safetensors") for d in (resumed, adapter))
    assert got.keys() == want.keys()
    for key, value in want.items():
        torch.testing.assert_close(got[key], value)

    assert main(["lora", "merge", "--model", str(base), "--adapter", str(adapter), "--out",
                 str(tmp_path / "merged")]) == 0
    expected = merge(load_adapter(make_model("tiny"), adapter))
    assert torch.equal(weights(tmp_path / "merged")["model.layers.0.self_attn.q_proj.weight"],
                       expected.state_dict()["model.layers.0.self_attn.q_proj.weight"])
    ask = ["--prompt", "add 3 and 4", "--temperature", "0", "--max-new-tokens", "6"]
    capsys.readouterr()
    assert main(["chat", "--model", str(base), "--adapter", str(adapter), *ask]) == 0
    with_adapter = capsys.readouterr().out
    assert main(["chat", "--model", str(tmp_path / "merged"), *ask]) == 0
    assert capsys.readouterr().out == with_adapter


@pytest.mark.parametrize("name, dtype", [("tiny", "fp32"), ("tiny", "bf16"), ("tiny-moe", "bf16")])
def test_the_kernels_train_like_the_reference(data, tmp_path, name, dtype):
    """A few steps of pretraining with kernels=auto and kernels=reference, from the same seed on the same rows:
    the logged losses agree within rounding (fp32), or within bf16's (where the fast paths differ the most: matmul
    attention, fused norms, padded expert groups), and the runs record their setting."""
    losses = {}
    for kernels in ("auto", "reference"):
        out = tmp_path / kernels
        train(config(data, out, model=name, dtype=dtype, kernels=kernels, max_steps=8, log_every=1))
        losses[kernels] = [m["loss"] for m in metrics(out)]
        assert f"kernels: {kernels}" in (out / "config.yaml").read_text()
    auto, reference = losses["auto"], losses["reference"]
    assert len(auto) == 8 and auto[-1] < auto[0] - 0.5               # both learn
    tolerance = 1e-4 if dtype == "fp32" else 1e-2
    diff = max(abs(a - r) for a, r in zip(auto, reference, strict=True))
    assert diff < tolerance, (auto, reference)
