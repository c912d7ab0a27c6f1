"""The model directory: a Hugging Face Qwen3 / Qwen3-MoE checkpoint.

    config.json              ModelConfig in transformers' layout
    model.safetensors        tensors under transformers' names; a tied lm_head is not stored;
                             MoE experts one by one: model.layers.{i}.mlp.experts.{e}.{gate,up,down}_proj.weight
    generation_config.json   special token ids and default sampling
    A reward model (`RewardModel`) is the same directory with architectures = [Qwen3ForSequenceClassification],
    one label, and a `score.weight` [1, hidden] in place of the LM head.

    tokenizer.json, tokenizer_config.json   the tokenizer and chat template (when saved with one)

Saving writes a temporary sibling directory and renames it into place, so a crash never leaves half a model.
Loading checks every tensor against the config and names the file and tensor of any mismatch.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from minimind.config import ModelConfig
from minimind.errors import MiniMindError
from minimind.fileio import atomic_directory
from minimind.model.reward import SEQUENCE_CLASSIFICATION, RewardModel
from minimind.model.transformer import Transformer
from minimind.runtime import resolve_device
from minimind.tokenizer import Tokenizer

WEIGHTS, INDEX = "model.safetensors", "model.safetensors.index.json"
_EXPERT = re.compile(r"(model\.layers\.\d+\.mlp\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight")
_PROJS = ("gate_proj", "up_proj", "down_proj")


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


def from_checkpoint(tensors: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Checkpoint tensors → our state dict: stack per-expert tensors (or split transformers 5's fused
    gate_up_proj), add the tied head."""
    out, experts = {}, {}
    for name, t in tensors.items():
        m = _EXPERT.fullmatch(name)
        if m:
            experts.setdefault((m[1], m[3]), {})[int(m[2])] = t
        elif name.endswith("mlp.experts.gate_up_proj"):
            stem = name.rpartition(".")[0]
            out[f"{stem}.gate_proj"], out[f"{stem}.up_proj"] = t.chunk(2, dim=1)
        else:
            out[name] = t
    for (stem, proj), by_index in experts.items():
        missing = [e for e in range(config.num_experts) if e not in by_index]
        if missing:
            raise MiniMindError(f"missing tensor '{stem}.{missing[0]}.{proj}.weight'")
        out[f"{stem}.{proj}"] = torch.stack([by_index[e] for e in range(config.num_experts)])
    if config.tie_word_embeddings:
        out.pop("lm_head.weight", None)      # a tied head may be stored anyway; the embedding wins
    return out


def save_model(model: Transformer | RewardModel, path: str | Path, dtype: torch.dtype | None = None,
               tokenizer: Tokenizer | None = None) -> Path:
    """Write `model` (and its tokenizer's files) as a model directory at `path`, replacing one that is there,
    atomically."""
    state = {k: v.detach().to("cpu", dtype or v.dtype) for k, v in model.state_dict().items()}
    saved_dtype = str(dtype or model.model.embed_tokens.weight.dtype).removeprefix("torch.")
    if tokenizer is not None and tokenizer.vocab_size > model.config.vocab_size:
        raise MiniMindError(f"the tokenizer has {tokenizer.vocab_size} tokens; the model's vocab_size is "
                            f"{model.config.vocab_size}")
    with atomic_directory(path, marker="config.json") as tmp:
        config = model.config.to_hf_dict(saved_dtype)
        if isinstance(model, RewardModel):
            config |= SEQUENCE_CLASSIFICATION
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        save_file(to_checkpoint(state, model.config), tmp / WEIGHTS, metadata={"format": "pt"})
        (tmp / "generation_config.json").write_text(json.dumps(generation_config(model.config), indent=2) + "\n")
        if tokenizer is not None:
            tokenizer.save(tmp)
    return Path(path)


def generation_config(config: ModelConfig) -> dict:
    return {"bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id,
            "pad_token_id": config.pad_token_id, "do_sample": True, "temperature": 0.85, "top_p": 0.85}


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of model.safetensors (or of the shards its index lists), on the CPU."""
    files = [path / WEIGHTS]
    if not files[0].is_file() and (path / INDEX).is_file():
        try:
            weight_map = json.loads((path / INDEX).read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise MiniMindError(f"{path / INDEX}: not a safetensors index ({e})") from None
        files = [path / name for name in sorted(set(weight_map.values()))]
    tensors = {}
    for file in files:
        if not file.is_file():
            raise MiniMindError(f"{file}: file not found")
        try:
            with safe_open(file, framework="pt") as f:
                for name in f.keys():
                    tensors[name] = f.get_tensor(name)
        except (SafetensorError, OSError) as e:
            raise MiniMindError(f"{file}: not a readable safetensors file, truncated or corrupt ({e})") from None
    return tensors


def load_model(path: str | Path, device: str | torch.device | None = None,
               dtype: torch.dtype | None = None, rope_scaling: dict | None = None) -> Transformer:
    """Read a model directory (ours, or any transformers Qwen3 / Qwen3-MoE checkpoint) into a Transformer in
    eval mode, on `device` (default: the best available) in `dtype` (default: as stored, fp32 on CPU for
    half-precision files). `rope_scaling` (e.g. `minimind.config.yarn(16, 2048)`) replaces the config's, to
    extend the context at inference."""
    if is_reward_model(path):
        raise MiniMindError(f"{path}: a reward model (Qwen3ForSequenceClassification), not a language model")
    return _load(path, Transformer, device, dtype, rope_scaling)


def load_reward_model(path: str | Path, device: str | torch.device | None = None,
                      dtype: torch.dtype | None = None) -> RewardModel:
    """Read a reward model directory (Qwen3ForSequenceClassification, one label) into a RewardModel in eval
    mode; see `load_model` for `device` and `dtype`."""
    if not is_reward_model(path):
        raise MiniMindError(f"{path}: not a reward model (config.json's architectures is not "
                            f"{SEQUENCE_CLASSIFICATION['architectures']})")
    return _load(path, RewardModel, device, dtype, None)


def is_reward_model(path: str | Path) -> bool:
    """Whether the model directory at `path` holds a sequence-classification (reward) model."""
    try:
        architectures = json.loads((Path(path) / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return False
    return any(str(a).endswith("ForSequenceClassification") for a in architectures)


def _load(path, build, device, dtype, rope_scaling):
    path = Path(path)
    if not path.is_dir():
        raise MiniMindError(f"{path}: not a model directory")
    config = ModelConfig.load(path / "config.json")
    if rope_scaling is not None:
        config = config.replace(rope_scaling=rope_scaling)
    device = resolve_device(device)
    tensors = read_tensors(path)
    weights_file = path / (WEIGHTS if (path / WEIGHTS).is_file() else INDEX)
    try:
        state = from_checkpoint(tensors, config)
    except MiniMindError as e:
        raise MiniMindError(f"{weights_file}: {e}") from None

    with torch.device("meta"):
        model = build(config)
    expected = model.state_dict()
    if config.tie_word_embeddings:
        expected.pop("lm_head.weight", None)
    for name, ref in expected.items():
        if name not in state:
            raise MiniMindError(f"{weights_file}: missing tensor '{_disk_name(name)}'")
        if tuple(state[name].shape) != tuple(ref.shape):
            raise MiniMindError(f"{weights_file}: tensor '{_disk_name(name)}' has shape "
                                f"{list(state[name].shape)}, config.json implies {list(ref.shape)}")
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise MiniMindError(f"{weights_file}: unexpected tensor '{unexpected[0]}' (not part of this config)")

    if dtype is None:
        stored = state["model.embed_tokens.weight"].dtype
        dtype = torch.float32 if device.type == "cpu" and stored in (torch.float16, torch.bfloat16) else stored
    state = {k: v.to(device=device, dtype=dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=False, assign=True)
    if isinstance(model, Transformer):
        model.tie_weights()
    return model.eval()


def _disk_name(name: str) -> str:
    """The checkpoint name of one of our tensors (expert 0's, for stacked experts)."""
    stem, _, proj = name.rpartition(".")
    return f"{stem}.0.{proj}.weight" if stem.endswith("mlp.experts") else name
