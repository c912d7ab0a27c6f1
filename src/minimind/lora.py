"""LoRA from scratch: low-rank adapters on chosen linear layers, saved alone in PEFT's layout.

    y = x·Wᵀ + (α/r)·dropout(x)·Aᵀ·Bᵀ          (minimind.model.layers.Linear)

Only A and B train; the base stays frozen. An adapter directory holds `adapter_config.json` and
`adapter_model.safetensors` with PEFT's tensor names (`base_model.model.<module>.lora_A.weight`), so `peft`
loads it onto the same base where it is installed. `merge` folds the adapter into the base weights and gives
a plain model directory.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from minimind.errors import MiniMindError
from minimind.fileio import atomic_directory
from minimind.model.layers import Linear
from minimind.model.transformer import Transformer

CONFIG, WEIGHTS, PREFIX = "adapter_config.json", "adapter_model.safetensors", "base_model.model."
ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoRAConfig:
    rank: int = 8
    alpha: float = 16.0                  # the update is scaled by alpha / rank
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: list(ALL_PROJECTIONS))
    # module-name suffixes, e.g. ["q_proj", "o_proj"] as the reference adapts, or "re:" + a regular expression
    # over full module names, e.g. "re:model.layers.[0-3].self_attn.q_proj"

    def validate(self) -> None:
        if self.rank < 1 or self.alpha <= 0 or not 0 <= self.dropout < 1 or not self.targets:
            raise MiniMindError("config key 'lora': rank must be ≥ 1, alpha > 0, dropout in [0, 1), "
                                "targets non-empty")


def _matches(name: str, targets: list[str]) -> bool:
    return any(re.fullmatch(t[3:], name) if t.startswith("re:") else name == t or name.endswith("." + t)
               for t in targets)


def apply_lora(model: Transformer, cfg: LoRAConfig) -> list[str]:
    """Add adapters to the matching Linear layers and freeze everything else; returns their module names."""
    cfg.validate()
    names = [n for n, m in model.named_modules()
             if isinstance(m, Linear) and n != "lm_head" and _matches(n, cfg.targets)]
    if not names:
        raise MiniMindError(f"LoRA targets {cfg.targets!r} match no linear layer (names look like "
                            "'model.layers.0.self_attn.q_proj'; MoE expert weights and the LM head, which the "
                            "fused loss reads directly, cannot be adapted)")
    for p in model.parameters():
        p.requires_grad_(False)
    for name in names:
        model.get_submodule(name).add_lora(cfg.rank, cfg.alpha, cfg.dropout)
    model.lora_config = cfg
    return names


def adapted(model: Transformer) -> list[tuple[str, Linear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, Linear) and m.lora_A is not None]


def adapter_tensors(model: Transformer) -> dict[str, torch.Tensor]:
    """PEFT-named adapter tensors, on the CPU."""
    out = {}
    for name, module in adapted(model):
        out[f"{PREFIX}{name}.lora_A.weight"] = module.lora_A.detach().cpu().contiguous()
        out[f"{PREFIX}{name}.lora_B.weight"] = module.lora_B.detach().cpu().contiguous()
    return out


def save_adapter(model: Transformer, path: str | Path, base: str | None = None) -> Path:
    """Write adapter_config.json + adapter_model.safetensors atomically (PEFT's layout)."""
    cfg: LoRAConfig = model.lora_config
    modules = sorted({name.rsplit(".", 1)[-1] for name, _ in adapted(model)})
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base, "r": cfg.rank,
              "lora_alpha": cfg.alpha, "lora_dropout": cfg.dropout, "bias": "none", "fan_in_fan_out": False,
              "target_modules": modules,
              "modules_to_save": None, "use_rslora": False, "use_dora": False, "inference_mode": True,
              "init_lora_weights": True}
    with atomic_directory(Path(path), marker=CONFIG) as tmp:
        save_file(adapter_tensors(model), str(tmp / WEIGHTS), metadata={"format": "pt"})
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return Path(path)


def load_adapter(model: Transformer, path: str | Path) -> Transformer:
    """Add the adapter at `path` to `model` (its base), checking every tensor."""
    path = Path(path)
    try:
        config = json.loads((path / CONFIG).read_text())
        tensors = load_file(str(path / WEIGHTS))
    except FileNotFoundError as e:
        raise MiniMindError(f"{path}: not a LoRA adapter directory ({Path(e.filename).name} is missing)") from None
    except (ValueError, OSError, SafetensorError) as e:
        raise MiniMindError(f"{path}: the adapter does not load ({e})") from None
    if config.get("peft_type") != "LORA":
        raise MiniMindError(f"{path / CONFIG}: peft_type is {config.get('peft_type')!r}; only LORA is supported")
    modules = sorted({k[len(PREFIX):].rsplit(".lora_", 1)[0] for k in tensors})
    cfg = LoRAConfig(rank=int(config["r"]), alpha=float(config["lora_alpha"]),
                     dropout=float(config.get("lora_dropout") or 0.0), targets=modules)
    try:
        apply_lora(model, cfg)
    except MiniMindError:
        raise MiniMindError(f"{path}: the adapter's modules ({modules[0]}, …) are not in this model") from None
    device = model.lm_head.weight.device
    for name, module in adapted(model):
        for part in ("A", "B"):
            key, target = f"{PREFIX}{name}.lora_{part}.weight", getattr(module, f"lora_{part}")
            if key not in tensors or tensors[key].shape != target.shape:
                found = "missing" if key not in tensors else f"shape {tuple(tensors[key].shape)}"
                raise MiniMindError(f"{path / WEIGHTS}: tensor {key}: {found}, expected {tuple(target.shape)}")
            with torch.no_grad():
                target.copy_(tensors[key].to(device))
    return model


def merge(model: Transformer) -> Transformer:
    """Fold every adapter into its base weight: a plain model again (same logits, ≤ float rounding)."""
    for _, module in adapted(model):
        module.merge_lora()
    for p in model.parameters():
        p.requires_grad_(True)
    model.__dict__.pop("lora_config", None)
    return model
