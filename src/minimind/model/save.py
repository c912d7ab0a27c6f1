"""Writing a model directory: a Hugging Face Qwen3 / Qwen3-MoE checkpoint (the layout is described in
`minimind.model.io`, which reads it). Saving writes a temporary sibling directory and renames it into place, so a
crash never leaves half a model."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from minimind.config import ModelConfig
from minimind.errors import MiniMindError
from minimind.fileio import atomic_directory
from minimind.tokenizer import Tokenizer

WEIGHTS, INDEX = "model.safetensors", "model.safetensors.index.json"


def to_checkpoint(state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict → checkpoint tensors: drop the tied head, split stacked experts into one per expert."""
    out = {}
    for name, t in state.items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        stem, _, proj = name.rpartition(".")
        if stem.endswith("mlp.experts"):
            for e in range(t.shape[0]):
                out[f"{stem}.{e}.{proj}.weight"] = t[e]
        else:
            out[name] = t
    return {k: v.contiguous() for k, v in out.items()}


def nonfinite_count(t: torch.Tensor) -> int:
    """How many entries of a floating-point tensor are NaN or ±inf (0 for other dtypes)."""
    return int((~torch.isfinite(t)).sum()) if t.is_floating_point() else 0


def save_model(model: nn.Module, path: str | Path, dtype: torch.dtype | None = None,
               tokenizer: Tokenizer | None = None) -> Path:
    """Write `model` (and its tokenizer's files) as a model directory at `path`, replacing one that is there,
    atomically. A model with a NaN or inf weight (in the saved dtype) is refused, naming the tensor: a training run
    never leaves a broken model or checkpoint behind."""
    state = {k: v.detach().to("cpu", dtype or v.dtype) for k, v in model.state_dict().items()}
    saved_dtype = str(dtype or model.model.embed_tokens.weight.dtype).removeprefix("torch.")
    if tokenizer is not None and tokenizer.vocab_size > model.config.vocab_size:
        raise MiniMindError(f"the tokenizer has {tokenizer.vocab_size} tokens; the model's vocab_size is "
                            f"{model.config.vocab_size}")
    for name, t in state.items():
        bad = nonfinite_count(t)
        if bad:
            raise MiniMindError(f"{path}: not saved: tensor '{name}' holds {bad:,} non-finite values (NaN or inf)")
    with atomic_directory(path, marker="config.json") as tmp:
        if hasattr(model, "checkpoint_config"):            # a model of several parts (minimind.model.vlm)
            config, tensors = model.checkpoint_config(saved_dtype), model.to_checkpoint(state)
        else:
            config = model.config.to_hf_dict(saved_dtype) | getattr(model, "hf_config", {})
            tensors = to_checkpoint(state, model.config)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        save_file(tensors, tmp / WEIGHTS, metadata={"format": "pt"})
        (tmp / "generation_config.json").write_text(json.dumps(generation_config(model.config), indent=2) + "\n")
        if tokenizer is not None:
            tokenizer.save(tmp)
            for name, text in getattr(model, "processor_files", dict)().items():     # a vision model's processor
                (tmp / name).write_text(text)
    return Path(path)


def generation_config(config: ModelConfig) -> dict:
    return {"bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id,
            "pad_token_id": config.pad_token_id, "do_sample": True, "temperature": 0.85, "top_p": 0.85}
