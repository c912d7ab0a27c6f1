import json
import sys
import types

import pytest
import torch

from minimind.errors import MiniMindError
from minimind.train.logging import Progress, RunLogger, plot_losses

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_metrics_lines(tmp_path):
    run = RunLogger(tmp_path / "run")
    run.log(1, {"loss": 3.5, "lr": 1e-4, "tokens": 4096})
    run.log(2, {"loss": torch.tensor(3.25)})
    run.log(2, {"loss": 3.0, "bpb": 1.5}, kind="val")
    lines = read(tmp_path / "run" / "metrics.jsonl")   # flushed before close
    run.close()
    assert [(r["step"], r["kind"]) for r in lines] == [(1, "train"), (2, "train"), (2, "val")]
    assert lines[0]["loss"] == 3.5 and lines[0]["lr"] == 1e-4 and lines[0]["tokens"] == 4096
    assert lines[1]["loss"] == 3.25 and lines[2]["bpb"] == 1.5
    assert all(0 <= r["time"] < 60 for r in lines)
    assert list(lines[0]) == ["step", "kind", "time", "loss", "lr", "tokens"]


def test_truncate_after_drops_later_steps(tmp_path):
    run = RunLogger(tmp_path)
    for step in range(1, 6):
        run.log(step, {"loss": 1.0 / step})
    run.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "kind": "tr')   # a line cut short by a crash
    resumed = RunLogger(tmp_path)                   # append mode: the same file goes on
    resumed.truncate_after(3)
    resumed.log(4, {"loss": 0.2})
    resumed.close()
    lines = read(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in lines] == [1, 2, 3, 4]
    assert lines[-1]["loss"] == 0.2 and lines[-1]["time"] >= lines[2]["time"]


def test_disabled_logger_writes_nothing(tmp_path):
    run = RunLogger(tmp_path / "run", logger="wandb", enabled=False)   # not even the tracker is imported
    run.log(1, {"loss": 1.0})
    run.truncate_after(0)
    run.close()
    assert not (tmp_path / "run").exists()


def test_loss_curve_png(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    figures, savefig = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (figures.append(self), savefig(self, *a, **k)))
    run = RunLogger(tmp_path)
    for step in range(1, 21):
        run.log(step, {"loss": 5.0 / step, "lr": 1e-3 * min(1, step / 5)})
        if step % 10 == 0:
            run.log(step, {"loss": 6.0 / step}, kind="val")
    run.log(21, {"loss": float("nan")})   # a bad step does not break the plot
    run.close()
    assert (tmp_path / "loss_curve.png").read_bytes()[:8] == PNG_MAGIC
    loss_axes, lr_axes = figures[0].axes
    train, val = loss_axes.get_lines()
    assert (train.get_label(), val.get_label()) == ("train", "val")
    assert list(train.get_xdata()) == list(range(1, 21)) and list(val.get_xdata()) == [10, 20]
    assert len(lr_axes.get_lines()[0].get_xdata()) == 20


def test_no_png_without_train_lines(tmp_path):
    run = RunLogger(tmp_path)
    run.log(10, {"loss": 2.0}, kind="val")
    run.close()
    assert not (tmp_path / "loss_curve.png").exists()
    assert plot_losses(tmp_path / "missing.jsonl", tmp_path / "x.png") is False


@pytest.mark.parametrize("logger", ["tensorboard", "wandb", "swanlab"])
def test_missing_tracker_names_the_package(tmp_path, monkeypatch, logger):
    monkeypatch.setitem(sys.modules, logger, None)   # makes `import <logger>` fail
    with pytest.raises(MiniMindError, match=f"pip install {logger}"):
        RunLogger(tmp_path, logger=logger)


def test_unknown_logger(tmp_path):
    with pytest.raises(MiniMindError, match="logger"):
        RunLogger(tmp_path, logger="mlflow")


def fake_tracker(calls):
    """A stand-in for the wandb / swanlab module that records what it is called with."""
    module = types.ModuleType("fake")
    module.init = lambda **kwargs: calls.append(("init", kwargs)) or module
    module.log = lambda data, step: calls.append(("log", data, step))
    module.finish = lambda: calls.append(("finish",))
    return module


@pytest.mark.parametrize("logger", ["wandb", "swanlab"])
def test_tracker_forwarding(tmp_path, monkeypatch, logger):
    calls = []
    monkeypatch.setitem(sys.modules, logger, fake_tracker(calls))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("SWANLAB_MODE", raising=False)
    run = RunLogger(tmp_path / "run", logger=logger, config={"seed": 0})
    run.log(5, {"loss": 2.5}, kind="val")
    run.close()
    (_, init), log, finish = calls
    assert init["mode"] == "offline" and init["config"] == {"seed": 0}
    assert str(tmp_path / "run") in str(init.get("dir", init.get("logdir")))
    assert log == ("log", {"val/loss": 2.5}, 5) and finish == ("finish",)


def test_wandb_mode_from_environment(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "wandb", fake_tracker(calls))
    monkeypatch.setenv("WANDB_MODE", "online")
    RunLogger(tmp_path, logger="wandb").close()
    assert calls[0][1]["mode"] == "online"


def test_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = RunLogger(tmp_path, logger="tensorboard")
    run.log(1, {"loss": 3.0})
    run.log(2, {"loss": 2.5})
    run.log(2, {"loss": 2.0, "bpb": 1.0}, kind="val")
    run.close()
    resumed = RunLogger(tmp_path, logger="tensorboard")
    resumed.truncate_after(1)          # TensorBoard's step-2 events are purged too
    resumed.log(2, {"loss": 2.25})
    resumed.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"train/loss", "val/loss", "val/bpb"} <= set(events.Tags()["scalars"])
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(1, 3.0), (2, 2.25)]


def test_progress(capsys):
    bar = Progress(10, initial_step=2)
    bar.update(5, loss=2.3454, lr=3e-4, tokens_per_s=12345.4, mfu=0.4123, extra={"grad_norm": 0.5})
    bar.write("eval: loss 2.1")
    bar.close()
    err = capsys.readouterr()
    shown = err.out + err.err
    assert "loss 2.345 | lr 3.0e-04 | 12,345 tok/s | MFU 41.2% | grad_norm 0.5" in shown
    assert "5/10" in shown and "eval: loss 2.1" in shown


def test_progress_disabled(capsys):
    bar = Progress(10, enabled=False)
    bar.update(1, loss=2.0, lr=1e-3, tokens_per_s=1.0, mfu=None)
    bar.write("hidden")
    bar.close()
    err = capsys.readouterr()
    assert err.out == err.err == ""
