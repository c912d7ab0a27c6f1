"""The reference project's own weights → our model directory: its `.pth` state dicts and its transformers
directories (`model_type: minimind`, dense and MoE).

The reference (jingyaogong/minimind, `model/model_minimind.py`) names its tensors as transformers' Qwen3 does
(`model.layers.{i}.self_attn.q_proj.weight`, `mlp.gate.weight`, `mlp.experts.{e}.gate_proj.weight`, …; its own
converter loads them into Qwen3ForCausalLM with strict=True), so the tensors carry over unchanged. What a `.pth` does
not say is read from the tensors' shapes (vocabulary, width, layers, heads, head size, MLP and expert sizes) or
taken from the reference's `MiniMindConfig` defaults (RoPE θ 1e6, ε 1e-6, context 32768, top-1 routing with
renormalised weights, aux coefficient 5e-4, tied embeddings); `key=value` overrides change any of them. Its
computation matches ours: RMSNorm in fp32, q/k norm before RoPE, the half-split rotation, SwiGLU, softmax routing.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import torch

from minimind.config import ModelConfig
from minimind.errors import MiniMindError
from minimind.fileio import atomic_directory
from minimind.model.io import from_tensors, read_tensors
from minimind.model.save import save_model
from minimind.overrides import apply_overrides
from minimind.tokenizer.tokenizer import FILES

# The reference's MiniMindConfig defaults, under our field names (the shapes come from the tensors).
DEFAULTS = dict(max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6, num_experts_per_tok=1,
                norm_topk_prob=True, router_aux_loss_coef=5e-4, bos_token_id=1, eos_token_id=2, pad_token_id=0)
LAYER = re.compile(r"model\.layers\.(\d+)\.")


def import_reference(source: str | Path, out: str | Path, overrides: list[str] = (),
                     tokenizer: str | Path | None = None) -> Path:
    """A `.pth` state dict or a `model_type: minimind` directory → our model directory at `out`, with the
    reference's tokenizer files (from the directory, or `tokenizer`: the reference's `model/` folder)."""
    source = Path(source)
    if source.is_dir():
        config, tensors = _from_directory(source)
        tokenizer = tokenizer or source
    else:
        tensors = _read_pth(source)
        config = infer_config(tensors, source)
    if tokenizer is None or not (Path(tokenizer) / "tokenizer.json").is_file():
        raise MiniMindError(f"{source}: no tokenizer: pass --tokenizer DIR holding the reference's tokenizer.json "
                            "(its model/ folder); our default tokenizer numbers the tokens differently")
    try:
        config = apply_overrides(config, list(overrides))
    except MiniMindError as e:
        raise MiniMindError(f"{source}: {e}") from None
    model = from_tensors(tensors, config, source, device="cpu", dtype=torch.float32)
    with atomic_directory(out, marker="config.json") as tmp:
        save_model(model, tmp)
        for name in FILES:
            if (Path(tokenizer) / name).is_file():
                shutil.copy(Path(tokenizer) / name, tmp / name)
    return Path(out)


def infer_config(tensors: dict[str, torch.Tensor], source: Path) -> ModelConfig:
    """The model's shape from its tensors; the rest from the reference's defaults."""
    def shape(name: str) -> tuple[int, ...]:
        if name not in tensors:
            raise MiniMindError(f"{source}: missing tensor '{name}' (not a MiniMind state dict?)")
        return tuple(tensors[name].shape)

    shared = next((n for n in tensors if ".mlp.shared_experts." in n), None)
    if shared:
        raise MiniMindError(f"{source}: tensor '{shared}': a shared expert (the older minimind2-moe layout) has no "
                            "Qwen3-MoE equivalent; the minimind2-moe preset trains the routed experts alone")
    vocab, hidden = shape("model.embed_tokens.weight")
    layers = 1 + max((int(m[1]) for m in map(LAYER.match, tensors) if m), default=-1)
    if layers == 0:
        raise MiniMindError(f"{source}: no 'model.layers.N.' tensors (not a MiniMind state dict?)")
    prefix = "model.layers.0."
    qk_norm = prefix + "self_attn.q_norm.weight" in tensors
    head_dim = shape(prefix + "self_attn.q_norm.weight")[0] if qk_norm else None
    q_rows, k_rows = shape(prefix + "self_attn.q_proj.weight")[0], shape(prefix + "self_attn.k_proj.weight")[0]
    head_dim = head_dim or hidden // 8            # no q/k norm to read it from: MiniMindConfig's 8 heads
    fields = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, head_dim=head_dim,
                  num_attention_heads=q_rows // head_dim, num_key_value_heads=k_rows // head_dim, qk_norm=qk_norm)
    if prefix + "mlp.gate.weight" in tensors:
        experts = shape(prefix + "mlp.gate.weight")[0]
        moe_width = shape(prefix + "mlp.experts.0.gate_proj.weight")[0]
        fields |= dict(num_experts=experts, moe_intermediate_size=moe_width, intermediate_size=moe_width)
    else:
        fields |= dict(intermediate_size=shape(prefix + "mlp.gate_proj.weight")[0])
    head = tensors.get("lm_head.weight")
    tied = head is None or torch.equal(head, tensors["model.embed_tokens.weight"])
    return ModelConfig(**DEFAULTS, **fields, tie_word_embeddings=tied)


def _read_pth(path: Path) -> dict[str, torch.Tensor]:
    """A torch.save'd state dict (or a resume file's "model" entry), loaded without running pickled code."""
    if not path.is_file():
        raise MiniMindError(f"{path}: file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:                    # a truncated file, a foreign pickle, not a torch file
        raise MiniMindError(f"{path}: not a readable torch state dict ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MiniMindError(f"{path}: expected a dict of tensor names to tensors")
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}


def _from_directory(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """A transformers directory of the reference's own class: its config.json (MiniMindConfig fields, defaults
    for the missing ones) and its weights (safetensors or pytorch_model.bin)."""
    try:
        raw = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise MiniMindError(f"{path / 'config.json'}: unreadable ({e})") from None
    if raw.get("model_type") != "minimind":
        raise MiniMindError(f"{path / 'config.json'}: model_type is {raw.get('model_type')!r}, not 'minimind' "
                            "(a Qwen3, Qwen2 or Llama directory is read by `minimind import` as it is)")
    bin_file = path / "pytorch_model.bin"
    tensors = _read_pth(bin_file) if bin_file.is_file() else read_tensors(path)
    config = infer_config(tensors, path)
    names = {f.name for f in dataclasses.fields(ModelConfig)} - {"rope_scaling"}      # rope: below
    given = {k: v for k, v in raw.items() if k in names and v is not None}
    if not raw.get("use_moe", False):
        given = {k: v for k, v in given.items() if k not in ("num_experts", "num_experts_per_tok",
                                                             "moe_intermediate_size")}
    scaling = raw.get("rope_scaling")
    if scaling and raw.get("inference_rope_scaling", True):
        given["rope_scaling"] = {"rope_type": "yarn", **{k: v for k, v in scaling.items() if k != "type"}}
    try:
        return config.replace(**given), tensors
    except MiniMindError as e:
        raise MiniMindError(f"{path / 'config.json'}: {e}") from None
