"""Checkpoints: the model directory (the standard format) beside the training state, written atomically.

    OUT/checkpoints/step-000200/model/        config.json, model.safetensors, tokenizer … (fp32 master weights)
    OUT/checkpoints/step-000200/adapter/      instead of model/ in a LoRA run (the base is not copied)
    OUT/checkpoints/step-000200/state.pt      optimiser and grad-scaler states, RNG states
    OUT/checkpoints/step-000200/trainer.json  step, loader position, tokens seen, world size, the config
    OUT/checkpoints/step-000200/deepspeed/    deepspeed.stage > 0: each rank's ZeRO shard (train/zero.py)

The step directory appears complete or not at all (temp dir + rename), the last `keep_last` are kept, and
resuming takes the newest one that loads; any newer one that does not is moved aside (`damaged-step-…`, with a
notice), and when none loads resuming stops with an error that names each and why.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from minimind.errors import MiniMindError
from minimind.fileio import atomic_directory
from minimind.lora import WEIGHTS as ADAPTER_WEIGHTS
from minimind.lora import adapted, save_adapter
from minimind.model.io import read_tensors

PREFIX = "step-"
DAMAGED = "damaged-"                 # a checkpoint that did not load on resume, moved aside


def rng_states() -> dict:
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(out: Path, step: int, model, tokenizer, state: dict, trainer: dict, keep_last: int,
                    extra: dict[str, Path] | None = None) -> Path:
    """Write checkpoint `step` under OUT/checkpoints and delete all but the newest `keep_last`; `extra` folders
    (name → a folder written elsewhere, e.g. DeepSpeed's shards from every rank) are moved in before it appears."""
    root = Path(out) / "checkpoints"
    path = root / f"{PREFIX}{step:06d}"
    with atomic_directory(path, marker="trainer.json") as tmp:
        for name, folder in (extra or {}).items():
            shutil.move(str(folder), str(tmp / name))
        if adapted(model):
            save_adapter(model, tmp / "adapter")
        else:
            model.save(tmp / "model", tokenizer=tokenizer)
        torch.save(state, tmp / "state.pt")
        (tmp / "trainer.json").write_text(json.dumps(trainer, indent=2, ensure_ascii=False) + "\n")
    for old in checkpoints(out)[keep_last:]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def staging(out: Path, step: int) -> Path:
    """The hidden folder under OUT/checkpoints where every rank writes its part of checkpoint `step` (then moved
    into it by `save_checkpoint`)."""
    return Path(out) / "checkpoints" / f".staging-{step:06d}"


def clear(out: Path) -> None:
    """Remove an earlier run's checkpoints (a fresh run into the same directory)."""
    for old in checkpoints(out):
        shutil.rmtree(old, ignore_errors=True)


def checkpoints(out: Path) -> list[Path]:
    """Step directories under OUT/checkpoints, newest first (temporary and partial names excluded)."""
    root = Path(out) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]), reverse=True)


def load_latest(out: Path, move_damaged: bool = True) -> tuple[Path, dict, dict]:
    """(model or adapter directory, state, trainer info) of the newest checkpoint that loads.

    Damaged checkpoints newer than that one are moved aside to OUT/checkpoints/damaged-<name> (never deleted), each
    with a notice on stderr, by the one process that has `move_damaged` (rank 0; the others only skip them). When
    none loads, MiniMindError names every checkpoint found and why it was rejected."""
    root, rejected = Path(out) / "checkpoints", []
    for path in checkpoints(out):
        try:
            trainer = json.loads((path / "trainer.json").read_text())
            state = torch.load(path / "state.pt", weights_only=False)
            weights = path / "adapter" if (path / "adapter").is_dir() else path / "model"
            if weights.name == "adapter":                        # the weights must load too
                load_file(weights / ADAPTER_WEIGHTS)
            else:
                read_tensors(weights)
        except Exception as e:                    # any damage: fall back to the previous checkpoint
            rejected.append((path, f"{type(e).__name__}: {e}".splitlines()[0]))
            continue
        for bad, reason in rejected if move_damaged else ():
            aside = _free_name(root / f"{DAMAGED}{bad.name}")
            bad.rename(aside)
            print(f"notice: checkpoint {bad} does not load ({reason}); moved aside to {aside.name}", file=sys.stderr)
        return weights, state, trainer
    if not rejected:
        raise MiniMindError(f"--resume: no checkpoint under {root} (start without --resume for a fresh run)")
    found = "; ".join(f"{path.name}: {reason}" for path, reason in rejected)
    raise MiniMindError(f"--resume: no checkpoint under {root} loads ({found}); nothing was deleted")


def _free_name(path: Path) -> Path:
    """path, or path.1, path.2, … : the first that does not exist."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate
