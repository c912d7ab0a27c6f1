"""The model directory: a Hugging Face Qwen3 / Qwen3-MoE checkpoint.

    config.json              ModelConfig in transformers' layout
    model.safetensors        tensors under transformers' names; a tied lm_head is not stored;
                             MoE experts one by one: model.layers.{i}.mlp.experts.{e}.{gate,up,down}_proj.weight
    generation_config.json   special token ids and default sampling
    A reward model (`RewardModel`) is the same directory with architectures = [Qwen3ForSequenceClassification],
    one label, and a `score.weight` [1, hidden] in place of the LM head.

    tokenizer.json, tokenizer_config.json   the tokenizer and chat template (when saved with one)

Writing lives in `minimind.model.save`. Loading checks every tensor against the config and names the file and
tensor of any mismatch.
"""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from minimind.config import AudioConfig, ModelConfig, VisionConfig, read_json_object
from minimind.errors import MiniMindError
from minimind.model.kernels import Kernels, use_kernels
from minimind.model.omni import OmniModel, is_omni_dir
from minimind.model.reward import SEQUENCE_CLASSIFICATION, RewardModel
from minimind.model.save import INDEX, WEIGHTS, generation_config, nonfinite_count, save_model, to_checkpoint
from minimind.model.transformer import Transformer
from minimind.model.vlm import VisionLanguageModel, from_disk_names, is_vision_dir
from minimind.runtime import resolve_device

__all__ = ["INDEX", "WEIGHTS", "from_checkpoint", "generation_config", "is_reward_model", "load_model", "read_tower",
           "load_reward_model", "read_tensors", "save_model", "to_checkpoint"]

_EXPERT = re.compile(r"(model\.layers\.\d+\.mlp\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight")
_PROJS = ("gate_proj", "up_proj", "down_proj")


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
               dtype: torch.dtype | None = None, rope_scaling: dict | None = None,
               kernels: Kernels = "auto", allow_nonfinite: bool = False) -> Transformer:
    """Read a model directory (ours, or any transformers Qwen3 / Qwen3-MoE checkpoint) into a Transformer in
    eval mode, on `device` (default: the best available) in `dtype` (default: as stored, fp32 on CPU for
    half-precision files). `rope_scaling` (e.g. `minimind.config.yarn(16, 2048)`) replaces the config's, to
    extend the context at inference. `kernels`: "auto" (the fast paths) or "reference" (`minimind.model.kernels`).
    A tensor holding NaN or inf is refused, naming it, unless `allow_nonfinite` (to inspect a broken model)."""
    if is_reward_model(path):
        raise MiniMindError(f"{path}: a reward model (Qwen3ForSequenceClassification), not a language model")
    return use_kernels(_load(path, Transformer, device, dtype, rope_scaling, allow_nonfinite), kernels)


def load_reward_model(path: str | Path, device: str | torch.device | None = None,
                      dtype: torch.dtype | None = None, kernels: Kernels = "auto",
                      allow_nonfinite: bool = False) -> RewardModel:
    """Read a reward model directory (Qwen3ForSequenceClassification, one label) into a RewardModel in eval
    mode; see `load_model` for the other arguments."""
    if not is_reward_model(path):
        raise MiniMindError(f"{path}: not a reward model (config.json's architectures is not "
                            f"{SEQUENCE_CLASSIFICATION['architectures']})")
    return use_kernels(_load(path, RewardModel, device, dtype, None, allow_nonfinite), kernels)


def is_reward_model(path: str | Path) -> bool:
    """Whether the model directory at `path` holds a sequence-classification (reward) model."""
    try:
        architectures = json.loads((Path(path) / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return False
    return any(str(a).endswith("ForSequenceClassification") for a in architectures)


def _load(path, build, device, dtype, rope_scaling, allow_nonfinite=False):
    path = Path(path)
    if path.suffix in (".pth", ".pt") and path.is_file():
        raise MiniMindError(f"{path}: a torch state dict, not a model directory (the reference's weights: convert "
                            f"them with `minimind import {path} --out DIR --tokenizer THEIR_MODEL_FOLDER`)")
    if not path.is_dir():
        raise MiniMindError(f"{path}: not a model directory")
    if is_vision_dir(path):
        config, vision = VisionConfig.load(path / "config.json")
        build, tensors = partial(VisionLanguageModel, vision=vision), from_disk_names(read_tensors(path))
    elif is_omni_dir(path):
        config, audio = AudioConfig.load(path / "config.json")
        build, tensors = partial(OmniModel, audio=audio), read_tensors(path)
    else:
        config, tensors = ModelConfig.load(path / "config.json"), read_tensors(path)
    if rope_scaling is not None:
        config = config.replace(rope_scaling=rope_scaling)
    weights_file = path / (WEIGHTS if (path / WEIGHTS).is_file() else INDEX)
    return from_tensors(tensors, config, weights_file, build, device, dtype, allow_nonfinite)


def from_tensors(tensors: dict[str, torch.Tensor], config: ModelConfig, source: str | Path, build=Transformer,
                 device=None, dtype: torch.dtype | None = None, allow_nonfinite: bool = False):
    """A model (eval mode) from checkpoint tensors under transformers' names, each checked against `config`: a
    missing, misshapen, unexpected or non-finite tensor is a MiniMindError naming `source` and the tensor."""
    weights_file, device = source, resolve_device(device)
    try:
        state = from_checkpoint(tensors, config)
    except MiniMindError as e:
        raise MiniMindError(f"{weights_file}: {e}") from None

    with torch.device("meta"):
        model = build(config)
    expected = model.state_dict()
    if config.tie_word_embeddings:
        expected.pop("lm_head.weight", None)
    rename = getattr(model, "disk_name", lambda name: name)

    def disk(name: str) -> str:
        return rename(_disk_name(name))

    missing = [name for name in expected if name not in state]
    if missing:
        raise MiniMindError(f"{weights_file}: missing tensor '{disk(missing[0])}'{_more(missing, disk)}")
    for name, ref in expected.items():
        if tuple(state[name].shape) != tuple(ref.shape):
            raise MiniMindError(f"{weights_file}: tensor '{disk(name)}' has shape "
                                f"{list(state[name].shape)}, the config implies {list(ref.shape)}")
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise MiniMindError(f"{weights_file}: unexpected tensor '{disk(unexpected[0])}' (not part of this config)"
                            f"{_more(unexpected, disk)}")
    if not allow_nonfinite:
        for name, t in state.items():
            bad = nonfinite_count(t)
            if bad:
                raise MiniMindError(f"{weights_file}: tensor '{disk(name)}' holds {bad:,} non-finite values "
                                    "(NaN or inf); the model is broken (load it with --allow-nonfinite to inspect it)")

    if dtype is None:
        stored = state["model.embed_tokens.weight"].dtype
        dtype = torch.float32 if device.type == "cpu" and stored in (torch.float16, torch.bfloat16) else stored
    state = {k: v.to(device=device, dtype=dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=False, assign=True)
    if isinstance(model, Transformer):
        model.tie_weights()
    return model.eval()


def _more(names: list[str], disk) -> str:
    """", and N more: a, b, …" for the names after the first (none: "")."""
    if len(names) < 2:
        return ""
    shown = ", ".join(disk(n) for n in names[1:4])
    return f" and {len(names) - 1} more ({shown}{', …' if len(names) > 4 else ''})"


def _disk_name(name: str) -> str:
    """The checkpoint name of one of our tensors (expert 0's, for stacked experts)."""
    stem, _, proj = name.rpartition(".")
    return f"{stem}.0.{proj}.weight" if stem.endswith("mlp.experts") else name


TOWER_PREFIXES = ("model.vision_tower.", "vision_tower.", "vision_model.")


def read_tower(path: str | Path) -> tuple[VisionConfig, dict[str, torch.Tensor]]:
    """A local transformers SigLIP / CLIP directory (a vision model, a whole dual encoder, or a Llava checkpoint)
    → its tower's config and tensors under our names (the text encoder and pooling heads left out)."""
    path = Path(path)
    d = read_json_object(path / "config.json")
    if d.get("model_type") in ("llava", "minimind_v"):
        d = d.get("vision_config") or {}
    config = VisionConfig.from_tower_dict(d, str(path / "config.json"))
    state = {}
    for name, t in read_tensors(path).items():
        for prefix in TOWER_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        if name.startswith(("embeddings.", "pre_layrnorm.", "encoder.", "post_layernorm.")) and \
                not name.endswith("position_ids"):
            state[name] = t
    return config, state
