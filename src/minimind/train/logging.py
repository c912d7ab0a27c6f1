"""What a training run reports: `metrics.jsonl` (always), an optional tracker (TensorBoard, Weights & Biases or
SwanLab, each an optional install), `loss_curve.png` at the end, and a one-line progress bar on the terminal.

Every line of `metrics.jsonl` is one JSON object: `{"step", "kind", "time", **metrics}`, with `kind` "train" or
"val" (or any other name) and `time` in seconds of training since the run began. Re-plot a run with
`plot_losses("runs/x/metrics.jsonl", "runs/x/loss_curve.png")`.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from minimind.errors import MiniMindError

TRACKERS = ("none", "tensorboard", "wandb", "swanlab")


def _require(module: str, logger: str):
    """Import an optional tracker module, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MiniMindError(f"logger={logger} needs the '{logger}' package: pip install {logger}") from None


def _number(value: Any) -> int | float:
    """Ints and floats as they are; anything else (a 0-d tensor, a numpy scalar) as a float."""
    return value if isinstance(value, (int, float)) else float(value)


def _read_lines(path: Path) -> list[dict]:
    """The JSON objects of a metrics file; a line cut short by a crash (or otherwise unreadable) is skipped."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


class RunLogger:
    """Appends metrics to `out_dir/metrics.jsonl` and forwards them to the chosen tracker.

    `logger` is one of TRACKERS; `config` (a plain dict) is handed to wandb/swanlab as the run's hyper-parameters.
    With `enabled=False` (non-zero DDP ranks) every method does nothing and no file is touched.
    """

    def __init__(self, out_dir: str | Path, logger: str = "none", config: dict | None = None, enabled: bool = True):
        self.enabled = enabled
        self.out_dir = Path(out_dir)
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self._start = time.monotonic()
        self._file = None
        self._tracker_log = self._tracker_close = None
        self._purge_step = None  # TensorBoard drops its events from this step on (a resumed run)
        if logger not in TRACKERS:
            raise MiniMindError(f"logger must be one of {', '.join(TRACKERS)}, not {logger!r}")
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._open_tracker(logger, config or {})
        self._file = open(self.metrics_path, "a", encoding="utf-8")

    def _open_tracker(self, logger: str, config: dict) -> None:
        if logger == "tensorboard":
            _require("tensorboard", logger)  # torch.utils.tensorboard needs it
            from torch.utils.tensorboard import SummaryWriter

            writers = []  # opened at the first log, so that truncate_after's purge_step reaches it

            def log(step, kind, metrics):
                if not writers:
                    writers.append(SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=self._purge_step))
                for key, value in metrics.items():
                    writers[0].add_scalar(f"{kind}/{key}", value, step)

            self._tracker_log = log
            self._tracker_close = lambda: writers and writers[0].close()
        elif logger == "wandb":
            wandb = _require("wandb", logger)
            run = wandb.init(project="minimind", name=self.out_dir.name, config=config, dir=str(self.out_dir),
                             mode=os.environ.get("WANDB_MODE", "offline"))
            self._tracker_log = lambda step, kind, m: run.log({f"{kind}/{k}": v for k, v in m.items()}, step=step)
            self._tracker_close = run.finish
        elif logger == "swanlab":
            swanlab = _require("swanlab", logger)
            logdir = self.out_dir / "swanlab"
            logdir.mkdir(exist_ok=True)
            swanlab.init(project="minimind", experiment_name=self.out_dir.name, config=config, logdir=str(logdir),
                         mode=os.environ.get("SWANLAB_MODE", "offline"))
            self._tracker_log = lambda step, kind, m: swanlab.log({f"{kind}/{k}": v for k, v in m.items()}, step=step)
            self._tracker_close = swanlab.finish

    def log(self, step: int, metrics: dict[str, float], kind: str = "train") -> None:
        """Write one line `{"step", "kind", "time", **metrics}` (flushed at once) and forward it to the tracker."""
        if not self.enabled:
            return
        metrics = {key: _number(value) for key, value in metrics.items()}
        record = {"step": int(step), "kind": kind, "time": round(time.monotonic() - self._start, 3), **metrics}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tracker_log is not None:
            self._tracker_log(int(step), kind, metrics)

    def truncate_after(self, step: int) -> None:
        """Drop the lines after `step` (a resumed run goes back to its checkpoint's step) and any line cut short,
        so the file never holds a step twice. Later `time` values continue from the last line kept."""
        if not self.enabled:
            return
        self._file.close()
        kept = [r for r in _read_lines(self.metrics_path) if r["step"] <= step]
        tmp = self.metrics_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, self.metrics_path)
        self._file = open(self.metrics_path, "a", encoding="utf-8")
        last_time = max((r["time"] for r in kept if isinstance(r.get("time"), (int, float))), default=0.0)
        self._start = time.monotonic() - last_time
        self._purge_step = step + 1

    def close(self) -> None:
        """Finish the tracker, close the file and write `loss_curve.png` (if there is any train loss)."""
        if not self.enabled or self._file is None:
            return
        if self._tracker_close is not None:
            self._tracker_close()
            self._tracker_log = self._tracker_close = None
        self._file.close()
        self._file = None
        plot_losses(self.metrics_path, self.out_dir / "loss_curve.png")
        plot_rewards(self.metrics_path, self.out_dir / "reward_curve.png")


def plot_rewards(metrics_path: str | Path, png_path: str | Path) -> bool:
    """RL runs: the mean reward of each rollout's first draw of prompts (`reward_drawn`: before dynamic sampling
    keeps only the groups with mixed rewards, so it is the policy's own; `reward_mean` in older logs), per step
    and as a running mean over 10 logged steps, with the held-out accuracy as markers on a second axis. Returns
    False, writing nothing, without a logged reward."""
    records = _read_lines(Path(metrics_path)) if Path(metrics_path).is_file() else []
    train = [(r["step"], r.get("reward_drawn", r.get("reward_mean"))) for r in records
             if r.get("kind") == "train" and "reward_mean" in r]
    val = [(r["step"], r["accuracy"]) for r in records if r.get("kind") == "val" and "accuracy" in r]
    if not train:
        return False
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    steps, rewards = zip(*train, strict=True)
    running = [sum(rewards[max(0, i - 9):i + 1]) / len(rewards[max(0, i - 9):i + 1]) for i in range(len(rewards))]
    ax.plot(steps, rewards, linewidth=0.8, alpha=0.4, label="rollout reward")
    ax.plot(steps, running, linewidth=1.5, label="running mean (10)")
    ax.set_xlabel("step")
    ax.set_ylabel("reward")
    ax.grid(alpha=0.3)
    if val:
        twin = ax.twinx()
        twin.plot(*zip(*val, strict=True), "o-", color="tab:red", markersize=4, label="held-out accuracy")
        twin.set_ylabel("held-out accuracy")
        twin.legend(loc="lower right")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    return True


def plot_losses(metrics_path: str | Path, png_path: str | Path) -> bool:
    """Plot train loss against step (val loss as markers; the learning rate in a panel below, when logged) from a
    metrics.jsonl into a PNG. Returns False, writing nothing, when the file holds no train loss."""
    def series(kind: str, key: str) -> tuple[list[int], list[float]]:
        points = [(r["step"], r[key]) for r in records if r.get("kind") == kind and isinstance(r.get(key), (int, float))
                  and math.isfinite(r[key])]
        return [s for s, _ in points], [v for _, v in points]

    records = _read_lines(Path(metrics_path)) if Path(metrics_path).is_file() else []
    train, val, lr = series("train", "loss"), series("val", "loss"), series("train", "lr")
    if not train[0]:
        return False
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MiniMindError("the loss curve needs matplotlib: pip install matplotlib") from None

    panels = 2 if lr[0] else 1
    fig = Figure(figsize=(8, 4.5 + 2 * (panels - 1)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False, height_ratios=[3, 1][:panels])[:, 0]
    axes[0].plot(*train, linewidth=1, label="train")
    if val[0]:
        axes[0].plot(*val, "o-", markersize=4, label="val")
    axes[0].set_ylabel("loss")
    axes[0].legend()
    axes[0].grid(alpha=0.3)
    if panels == 2:
        axes[1].plot(*lr, color="tab:gray", linewidth=1)
        axes[1].set_ylabel("lr")
        axes[1].ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        axes[1].grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    return True


class Progress:
    """The training loop's one-line progress bar (tqdm): steps done, tqdm's ETA, and a postfix like
    `loss 2.345 | lr 3.0e-04 | 12,345 tok/s | MFU 41.2%`. With `enabled=False` nothing is shown."""

    def __init__(self, total_steps: int, initial_step: int = 0, enabled: bool = True):
        self.enabled = enabled
        self.bar = tqdm(total=total_steps, initial=initial_step, unit="step", dynamic_ncols=True, disable=not enabled)

    def update(self, step: int, loss: float, lr: float, tokens_per_s: float, mfu: float | None = None,
               extra: dict | None = None) -> None:
        """Move the bar to `step` and show the numbers; `mfu` is a fraction (0.412 shows as 41.2%)."""
        if not self.enabled:
            return
        parts = [f"loss {loss:.3f}", f"lr {lr:.1e}", f"{tokens_per_s:,.0f} tok/s"]
        if mfu is not None:
            parts.append(f"MFU {mfu:.1%}")
        for key, value in (extra or {}).items():
            parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
        self.bar.set_postfix_str(" | ".join(parts), refresh=False)
        self.bar.update(step - self.bar.n)

    def write(self, msg: str) -> None:
        """Print a line above the bar without breaking it."""
        if self.enabled:
            tqdm.write(msg)

    def close(self) -> None:
        self.bar.close()
