"""ModelConfig: the model's shape, with Qwen3Config's field names and meanings, and the named presets.

`config.json` is read and written in the Hugging Face layout so that transformers, vLLM and llama.cpp's
converter read our directories as Qwen3 (dense) or Qwen3-MoE (when `num_experts > 0`) checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minimind.errors import MiniMindError

DENSE = ("qwen3", "Qwen3ForCausalLM")
MOE = ("qwen3_moe", "Qwen3MoeForCausalLM")
# A masked-diffusion model (objective "diffusion"): the same decoder attending both ways. No stock class computes it,
# so it is saved under its own names (transformers refuses the directory) with the decoder's family beside them.
DIFFUSION = ("minimind_dlm", "MiniMindDiffusionLM")
# A hybrid of Gated DeltaNet and Qwen3 attention layers: Qwen3-Next / Qwen3.5 mix the same layer with a gated,
# partially rotated attention, so no stock class computes ours; saved under its own names, as a diffusion model is.
HYBRID = ("minimind_hybrid", "MiniMindHybridForCausalLM")
LAYER_TYPES = ("full_attention", "sliding_attention", "linear_attention")
OBJECTIVES = ("causal", "diffusion")
# The dense families one decoder serves, told apart by two flags: (qk_norm, attention_bias) → (model_type, class).
FAMILIES = {(True, False): DENSE, (False, True): ("qwen2", "Qwen2ForCausalLM"),
            (False, False): ("llama", "LlamaForCausalLM")}

# The model's code paths, a choice at run time (never saved in config.json): "auto" runs the fast kernels of
# `minimind.model.kernels` where they apply, "reference" the plain model of `minimind.model`.
KERNELS = ("auto", "reference")
# How configs and command-line flags spell a dtype (`runtime.resolve_dtype` also reads torch's long names).
DTYPE_NAMES = ("fp32", "bf16", "fp16")

# Fields a config.json must hold; the rest have Qwen3's defaults.
REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
YARN_KEYS = {"rope_type", "factor", "original_max_position_embeddings", "beta_fast", "beta_slow",
             "attention_factor", "mscale", "mscale_all_dim", "truncate"}


@dataclass
class ModelConfig:
    vocab_size: int = 6400
    hidden_size: int = 768
    intermediate_size: int = 2432          # SwiGLU width of the dense MLP
    num_hidden_layers: int = 8
    num_attention_heads: int = 8
    num_key_value_heads: int = 4           # grouped-query attention: query heads per KV head = heads / kv_heads
    head_dim: int = 96
    max_position_embeddings: int = 32768
    rope_theta: float = 1e6
    # None, or YaRN: {"rope_type": "yarn", "factor": s, "original_max_position_embeddings": L, ...}
    rope_scaling: dict | None = None
    rms_norm_eps: float = 1e-6
    qk_norm: bool = True                   # per-head RMSNorm of q and k (Qwen3); off for Qwen2 and Llama
    attention_bias: bool = False           # biases on q/k/v (Qwen2)
    tie_word_embeddings: bool = True
    initializer_range: float = 0.02
    # Mixture of experts: num_experts == 0 means a dense model.
    num_experts: int = 0
    num_experts_per_tok: int = 1
    moe_intermediate_size: int = 2432
    norm_topk_prob: bool = True
    router_aux_loss_coef: float = 5e-4
    # Special token ids (the tokenizer's <|endoftext|>, <|im_start|>, <|im_end|>).
    pad_token_id: int = 0
    bos_token_id: int = 1
    eos_token_id: int = 2
    # "causal": next-token prediction; "diffusion": masked diffusion (bidirectional attention, mask_token_id
    # marks the noised positions; minimind.train.diffusion, minimind.infer.diffusion).
    objective: str = "causal"
    mask_token_id: int = 27                # <|buffer1|>, a reserved token of the tokenizer (as MiniMind-dLM)
    # Sliding-window attention (Qwen3's fields): a "sliding_attention" layer attends to the last `sliding_window`
    # positions only (itself included). layer_types None: derived as Qwen3 does, layers i ≥ max_window_layers
    # slide when use_sliding_window.
    use_sliding_window: bool = False
    sliding_window: int = 4096
    max_window_layers: int = 0
    layer_types: list[str] | None = None
    # Gated DeltaNet layers ("linear_attention" in layer_types; minimind.model.deltanet), Qwen3.5's fields.
    linear_conv_kernel_dim: int = 4
    linear_key_head_dim: int = 96
    linear_value_head_dim: int = 96
    linear_num_key_heads: int = 8
    linear_num_value_heads: int = 8

    def __post_init__(self):
        self.validate()

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def is_diffusion(self) -> bool:
        return self.objective == "diffusion"

    @property
    def attention_types(self) -> list[str]:
        """Each layer's "full_attention" or "sliding_attention": layer_types, or Qwen3's rule when it is None."""
        if self.layer_types is not None:
            return list(self.layer_types)
        return ["sliding_attention" if self.use_sliding_window and i >= self.max_window_layers else "full_attention"
                for i in range(self.num_hidden_layers)]

    @property
    def is_windowed(self) -> bool:
        return "sliding_attention" in self.attention_types

    @property
    def is_hybrid(self) -> bool:
        return "linear_attention" in self.attention_types

    def plain_decoder_problem(self) -> str | None:
        """Why another engine's plain causal Qwen3 decoder would compute something else from this model (None: it
        would not): a diffusion model, sliding windows, DeltaNet layers."""
        if self.is_diffusion:
            return "a diffusion model (objective diffusion): its attention is bidirectional and it has no KV cache"
        if self.is_hybrid:
            return "a Gated-DeltaNet hybrid: its DeltaNet layers carry recurrent states, not keys and values"
        if self.is_windowed:
            return "sliding-window attention: its layers see only the last sliding_window positions"
        return None

    def window(self, layer: int) -> int | None:
        """The attention window of layer `layer` (None: full attention)."""
        return self.sliding_window if self.attention_types[layer] == "sliding_attention" else None

    def validate(self) -> None:
        """Type- and range-check every field; the error names the field."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (not isinstance(value, int) or isinstance(value, bool)):
                raise MiniMindError(f"model config field '{f.name}' must be an integer, got {value!r}")
            if f.type == "float":
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise MiniMindError(f"model config field '{f.name}' must be a number, got {value!r}")
                setattr(self, f.name, float(value))
            if f.type == "bool" and not isinstance(value, bool):
                raise MiniMindError(f"model config field '{f.name}' must be true or false, got {value!r}")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings"):
            if getattr(self, name) <= 0:
                raise MiniMindError(f"model config field '{name}' must be positive, got {getattr(self, name)}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise MiniMindError(f"model config: num_attention_heads ({self.num_attention_heads}) must be a multiple "
                                f"of num_key_value_heads ({self.num_key_value_heads})")
        if self.head_dim % 2:
            raise MiniMindError(f"model config field 'head_dim' must be even for RoPE, got {self.head_dim}")
        if self.num_experts < 0:
            raise MiniMindError(f"model config field 'num_experts' must be >= 0, got {self.num_experts}")
        if self.is_moe and not 1 <= self.num_experts_per_tok <= self.num_experts:
            raise MiniMindError(f"model config field 'num_experts_per_tok' must be in 1..num_experts "
                                f"({self.num_experts}), got {self.num_experts_per_tok}")
        if self.is_moe and (self.hidden_size % 8 or self.moe_intermediate_size % 8):
            raise MiniMindError(f"model config: hidden_size ({self.hidden_size}) and moe_intermediate_size "
                                f"({self.moe_intermediate_size}) of an MoE model must be multiples of 8 (grouped "
                                "GEMMs need rows aligned to 16 bytes)")
        if (self.qk_norm, self.attention_bias) not in FAMILIES or (self.is_moe and not self.qk_norm):
            raise MiniMindError(f"model config: qk_norm={self.qk_norm} with attention_bias={self.attention_bias}"
                                f"{' in an MoE model' if self.is_moe else ''} matches no supported architecture "
                                "(Qwen3: true/false, Qwen2: false/true, Llama: false/false; MoE is Qwen3-MoE)")
        if self.objective not in OBJECTIVES:
            raise MiniMindError(f"model config field 'objective' must be one of {', '.join(OBJECTIVES)}, "
                                f"got {self.objective!r}")
        if not 0 <= self.mask_token_id < self.vocab_size:
            raise MiniMindError(f"model config field 'mask_token_id' must be a token id in 0..{self.vocab_size - 1}, "
                                f"got {self.mask_token_id}")
        if self.rope_scaling is not None:
            self.rope_scaling = _check_rope_scaling(self.rope_scaling, self.max_position_embeddings)
        if self.sliding_window < 1:
            raise MiniMindError(f"model config field 'sliding_window' must be positive, got {self.sliding_window}")
        if self.layer_types is not None and (
                not isinstance(self.layer_types, list) or len(self.layer_types) != self.num_hidden_layers
                or any(t not in LAYER_TYPES for t in self.layer_types)):
            raise MiniMindError(f"model config field 'layer_types' must list one of {', '.join(LAYER_TYPES)} for each "
                                f"of the {self.num_hidden_layers} layers, got {self.layer_types!r}")
        if self.is_hybrid and self.linear_num_value_heads % self.linear_num_key_heads:
            raise MiniMindError("model config: linear_num_value_heads must be a multiple of linear_num_key_heads")
        if self.is_hybrid and self.linear_conv_kernel_dim < 2:
            raise MiniMindError("model config field 'linear_conv_kernel_dim' must be ≥ 2")
        if (self.is_windowed or self.is_hybrid) and self.is_diffusion:
            raise MiniMindError("model config: sliding-window attention is for causal models (objective 'causal')")

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    # ---- config.json -------------------------------------------------------------------------------------

    def to_hf_dict(self, dtype: str = "float32") -> dict[str, Any]:
        """The config.json that transformers reads as Qwen3Config / Qwen3MoeConfig (or Qwen2Config /
        LlamaConfig for imported models; legacy rope keys, which transformers 4 and 5, vLLM and llama.cpp's
        converter all read). A diffusion model is written under DIFFUSION's names, with its decoder's model_type
        as `decoder_model_type`, its objective and its mask token."""
        model_type, arch = MOE if self.is_moe else FAMILIES[self.qk_norm, self.attention_bias]
        d: dict[str, Any] = {"architectures": [arch], "model_type": model_type}
        own = DIFFUSION if self.is_diffusion else HYBRID if self.is_hybrid else None
        if own:
            d = {"architectures": [own[1]], "model_type": own[0], "decoder_model_type": model_type}
        for f in dataclasses.fields(self):
            d[f.name] = getattr(self, f.name)
        del d["qk_norm"]
        if not self.is_diffusion:
            del d["objective"], d["mask_token_id"]
        if not self.is_hybrid:
            for key in [k for k in d if k.startswith("linear_")]:
                del d[key]
        if not self.is_moe:
            for k in ("num_experts", "num_experts_per_tok", "moe_intermediate_size", "norm_topk_prob",
                      "router_aux_loss_coef"):
                del d[k]
        else:
            d.update(decoder_sparse_step=1, mlp_only_layers=[], output_router_logits=False)
        d.update(hidden_act="silu", attention_dropout=0.0, use_cache=True, mlp_bias=False, torch_dtype=dtype)
        if self.is_windowed:                  # transformers 4 reads the first three, transformers 5 layer_types
            types = self.attention_types
            d.update(use_sliding_window=True, max_window_layers=types.index("sliding_attention"), layer_types=types)
        elif self.is_hybrid:
            d.update(sliding_window=None, max_window_layers=self.num_hidden_layers, layer_types=self.attention_types)
        else:
            d.update(sliding_window=None, max_window_layers=self.num_hidden_layers)
            del d["layer_types"]
        return d

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], source: str = "config.json") -> ModelConfig:
        """Read a Hugging Face Qwen3 / Qwen3-MoE / Qwen2 / Llama config dict (transformers 4 or 5 layout)."""
        model_type = d.get("model_type")
        if model_type == DIFFUSION[0]:
            if d.get("objective") != "diffusion":
                raise MiniMindError(f"{source}: a {DIFFUSION[0]} config must say objective 'diffusion', "
                                    f"got {d.get('objective')!r}")
            model_type = d.get("decoder_model_type")
        elif model_type == HYBRID[0]:
            if "linear_attention" not in (d.get("layer_types") or []):
                raise MiniMindError(f"{source}: a {HYBRID[0]} config must list 'linear_attention' layers in "
                                    "'layer_types'")
            model_type = d.get("decoder_model_type")
        elif "objective" in d and d["objective"] != "causal":
            raise MiniMindError(f"{source}: objective {d['objective']!r} needs model_type {DIFFUSION[0]!r}")
        families = {t: flags for flags, (t, _) in FAMILIES.items()}
        if model_type == "minimind":
            raise MiniMindError(f"{source}: model_type 'minimind' is the reference project's own class; convert the "
                                "directory with `minimind import DIR --out NEW_DIR`")
        if model_type not in (*families, MOE[0]):
            raise MiniMindError(f"{source}: unknown model_type {model_type!r} (expected 'qwen3', 'qwen3_moe', "
                                "'qwen2' or 'llama')")
        missing = [k for k in REQUIRED if k not in d]
        if model_type == MOE[0]:
            missing += [k for k in ("num_experts_per_tok", "moe_intermediate_size") if k not in d]
            if "num_experts" not in d and "num_local_experts" not in d:
                missing.append("num_experts")
        if missing:
            raise MiniMindError(f"{source}: missing field '{missing[0]}'")
        for k in REQUIRED:
            if not isinstance(d[k], int) or isinstance(d[k], bool) or d[k] <= 0:
                raise MiniMindError(f"{source}: field '{k}' must be a positive integer, got {d[k]!r}")
        if d.get("hidden_act", "silu") != "silu":
            raise MiniMindError(f"{source}: field 'hidden_act' is {d['hidden_act']!r}; only 'silu' is supported")
        if d.get("mlp_bias", False) or (model_type != "qwen2" and d.get("attention_bias", False)):
            raise MiniMindError(f"{source}: field '{'mlp_bias' if d.get('mlp_bias') else 'attention_bias'}' is "
                                f"true; {model_type} models with these biases are not supported")
        if model_type == MOE[0] and (d.get("decoder_sparse_step", 1) != 1 or d.get("mlp_only_layers")):
            raise MiniMindError(f"{source}: fields 'decoder_sparse_step'/'mlp_only_layers' must leave every "
                                "layer an MoE layer")

        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        if not d.get("use_sliding_window") or d.get("sliding_window") is None:     # no window: full attention
            for key in ("use_sliding_window", "sliding_window", "max_window_layers"):
                kwargs.pop(key, None)
            if "linear_attention" not in (kwargs.get("layer_types") or []):
                kwargs.pop("layer_types", None)
        elif kwargs.get("layer_types") is None:
            kwargs.setdefault("max_window_layers", 28)              # Qwen3Config's default
        if model_type == MOE[0]:
            kwargs.setdefault("num_experts", d.get("num_local_experts"))
            kwargs.setdefault("norm_topk_prob", False)   # Qwen3MoeConfig's default
        else:
            kwargs["num_experts"] = 0
            kwargs["qk_norm"], kwargs["attention_bias"] = families[model_type]
        kwargs.setdefault("num_key_value_heads", d["num_attention_heads"])
        kwargs.setdefault("head_dim", d["hidden_size"] // d["num_attention_heads"])
        kwargs.setdefault("tie_word_embeddings", False)   # Qwen3Config's default
        # rope: transformers 5 writes "rope_parameters"; transformers 4 and the reference write
        # "rope_theta" + "rope_scaling".
        rope = d.get("rope_parameters") or {}
        scaling = d.get("rope_scaling") or {k: v for k, v in rope.items() if k != "rope_theta"}
        kwargs["rope_theta"] = d.get("rope_theta") or rope.get("rope_theta") or 10000.0
        rope_type = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
        kwargs["rope_scaling"] = None if rope_type == "default" else scaling
        for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
            value = kwargs.get(key)
            if isinstance(value, list):
                value = value[0] if value else None
            if value is None:
                kwargs.pop(key, None)
            else:
                kwargs[key] = value
        try:
            return cls(**kwargs)
        except MiniMindError as e:
            raise MiniMindError(f"{source}: {e}") from None

    def save(self, path: Path, dtype: str = "float32") -> None:
        Path(path).write_text(json.dumps(self.to_hf_dict(dtype), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> ModelConfig:
        return cls.from_hf_dict(read_json_object(path), source=str(path))


def read_json_object(path: str | Path) -> dict:
    """A config.json's object; a MiniMindError naming the file when it is missing, not JSON, or not an object."""
    path = Path(path)
    if not path.is_file():
        raise MiniMindError(f"{path}: file not found")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MiniMindError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise MiniMindError(f"{path}: expected a JSON object")
    return d


def _check_rope_scaling(scaling: Any, max_positions: int) -> dict:
    """Normalise a rope_scaling block to {"rope_type": "yarn", "factor": ..., ...}; only YaRN is supported."""
    if not isinstance(scaling, dict):
        raise MiniMindError(f"model config field 'rope_scaling' must be an object or null, got {scaling!r}")
    scaling = dict(scaling)
    rope_type = scaling.pop("type", None)
    scaling.setdefault("rope_type", rope_type or "default")
    if scaling["rope_type"] != "yarn":
        raise MiniMindError(f"model config field 'rope_scaling.rope_type' is {scaling['rope_type']!r}; "
                            "only 'yarn' is supported")
    unknown = set(scaling) - YARN_KEYS
    if unknown:
        raise MiniMindError(f"model config field 'rope_scaling' has unknown key '{sorted(unknown)[0]}'")
    original = scaling.setdefault("original_max_position_embeddings", max_positions)
    if scaling.get("factor") is None:
        scaling["factor"] = max_positions / original
    if not isinstance(scaling["factor"], (int, float)) or scaling["factor"] < 1:
        raise MiniMindError(f"model config field 'rope_scaling.factor' must be a number >= 1, "
                            f"got {scaling['factor']!r}")
    return scaling


def yarn(factor: float, original_max_position_embeddings: int = 2048) -> dict:
    """The YaRN block the reference uses (factor 16 over 2048 positions gives 32768)."""
    return {"rope_type": "yarn", "factor": float(factor), "beta_fast": 32.0, "beta_slow": 1.0,
            "original_max_position_embeddings": original_max_position_embeddings}


def parse_rope_scaling(spec: str, max_position_embeddings: int) -> dict:
    """"yarn:FACTOR[:ORIGINAL]" → a YaRN block; ORIGINAL defaults to max_position_embeddings / FACTOR (the
    trained context, when max_position_embeddings is the extended one: 32768 = 16 × 2048 for minimind-3)."""
    kind, _, rest = spec.partition(":")
    factor, _, original = rest.partition(":")
    try:
        factor = float(factor)
        if not factor >= 1:
            raise ValueError
        original = int(original) if original else int(max_position_embeddings / factor)
    except (ValueError, OverflowError):
        raise MiniMindError(f"--rope-scaling {spec!r}: expected yarn:FACTOR or yarn:FACTOR:ORIGINAL") from None
    if kind != "yarn" or factor < 1 or original < 1:
        raise MiniMindError(f"--rope-scaling {spec!r}: expected yarn:FACTOR (≥ 1) or yarn:FACTOR:ORIGINAL")
    return yarn(factor, original)


def _swiglu_width(hidden: int, multiplier: float) -> int:
    """Round hidden * multiplier up to a multiple of 64 (the reference's MLP widths)."""
    return math.ceil(hidden * multiplier / 64) * 64


VISION_FAMILIES = {"siglip": "siglip_vision_model", "clip": "clip_vision_model"}
PROJECTORS = ("llava", "minimind-v")
LLAVA = ("llava", "LlavaForConditionalGeneration")
MINIMIND_V = ("minimind_v", "MiniMindVForConditionalGeneration")


@dataclass
class VisionConfig:
    """The image side of a vision-language model: a ViT tower under transformers' SigLIP (or CLIP) field names, and
    how its patch features reach the language model.

    Each image becomes `image_tokens` = (image_size / patch_size)² feature rows, spliced into as many
    `<|image_pad|>` (image_token_id) positions. projector "llava": linear_2(GELU(linear_1(f))) on the output of
    layer `feature_layer` (transformers' hidden_states index; -1 = the last layer, before post_layernorm): the
    layout `LlavaForConditionalGeneration` computes, so the directory loads there. "minimind-v": MiniMind-V's
    LayerNorm first, on the post-layernorm features; no stock class computes that, so it is saved under its own
    architectures name.
    """
    family: str = "siglip"                 # "siglip" (no class token, patch bias) or "clip" (class token, pre-norm)
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    image_size: int = 256
    patch_size: int = 32
    num_channels: int = 3
    layer_norm_eps: float = 1e-6
    hidden_act: str = "gelu_pytorch_tanh"
    image_mean: tuple = (0.5, 0.5, 0.5)
    image_std: tuple = (0.5, 0.5, 0.5)
    image_token_id: int = 12
    projector: str = "llava"
    feature_layer: int = -1

    def __post_init__(self):
        if self.family not in VISION_FAMILIES:
            raise MiniMindError(f"vision config field 'family' must be one of {', '.join(VISION_FAMILIES)}; "
                                f"got {self.family!r}")
        if self.projector not in PROJECTORS:
            raise MiniMindError(f"vision config field 'projector' must be one of {', '.join(PROJECTORS)}; "
                                f"got {self.projector!r}")
        for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
                     "patch_size", "num_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise MiniMindError(f"vision config field '{name}' must be a positive integer, got {value!r}")
        if self.image_size % self.patch_size:
            raise MiniMindError(f"vision config: image_size ({self.image_size}) must be a multiple of patch_size "
                                f"({self.patch_size})")
        if self.hidden_size % self.num_attention_heads:
            raise MiniMindError(f"vision config: hidden_size ({self.hidden_size}) must be a multiple of "
                                f"num_attention_heads ({self.num_attention_heads})")
        if not -self.num_hidden_layers <= self.feature_layer <= self.num_hidden_layers or self.feature_layer == 0:
            raise MiniMindError(f"vision config field 'feature_layer' must name a layer (1..{self.num_hidden_layers}"
                                f" or -{self.num_hidden_layers}..-1), got {self.feature_layer}")
        if self.projector == "minimind-v" and self.feature_layer not in (-1, self.num_hidden_layers):
            raise MiniMindError("vision config: the minimind-v projector reads the last layer (feature_layer -1)")
        self.image_mean, self.image_std = tuple(self.image_mean), tuple(self.image_std)

    @property
    def image_tokens(self) -> int:
        """Feature rows (and <|image_pad|> tokens) per image."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def layers_run(self) -> int:
        """Encoder layers the features need (transformers' hidden_states[feature_layer])."""
        return self.feature_layer if self.feature_layer > 0 else self.num_hidden_layers + 1 + self.feature_layer

    def replace(self, **changes) -> VisionConfig:
        return dataclasses.replace(self, **changes)

    def tower_dict(self) -> dict[str, Any]:
        """The vision_config block transformers reads as SiglipVisionConfig / CLIPVisionConfig."""
        d = {"model_type": VISION_FAMILIES[self.family]}
        for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
                     "patch_size", "num_channels", "layer_norm_eps", "hidden_act"):
            d[name] = getattr(self, name)
        if self.family == "siglip":
            d["vision_use_head"] = False
        else:
            d["projection_dim"] = self.hidden_size
        return d

    def to_hf_dict(self, text: ModelConfig, dtype: str = "float32") -> dict[str, Any]:
        """config.json of the whole model: transformers' LlavaConfig (our own names for the minimind-v projector)."""
        model_type, arch = LLAVA if self.projector == "llava" else MINIMIND_V
        d = {"architectures": [arch], "model_type": model_type, "text_config": text.to_hf_dict(dtype),
             "vision_config": self.tower_dict(), "image_token_index": self.image_token_id,
             "image_seq_length": self.image_tokens, "projector_hidden_act": "gelu",
             "vision_feature_select_strategy": "full" if self.family == "siglip" else "default",
             "vision_feature_layer": self.feature_layer, "multimodal_projector_bias": True,
             "tie_word_embeddings": text.tie_word_embeddings, "torch_dtype": dtype,
             "image_mean": list(self.image_mean), "image_std": list(self.image_std)}
        if self.projector != "llava":
            d["projector"] = self.projector
        return d

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], source: str = "config.json") -> tuple[ModelConfig, VisionConfig]:
        """A LlavaConfig dict (ours or transformers') → (text config, vision config)."""
        for key in ("text_config", "vision_config"):
            if not isinstance(d.get(key), dict):
                raise MiniMindError(f"{source}: missing object '{key}'")
        text = ModelConfig.from_hf_dict(d["text_config"], source=f"{source}: text_config")
        return text, cls.from_tower_dict(d["vision_config"], f"{source}: vision_config",
                                         image_token_id=d.get("image_token_index", d.get("image_token_id", 12)),
                                         projector=d.get("projector", "llava"),
                                         feature_layer=d.get("vision_feature_layer", -1),
                                         image_mean=d.get("image_mean", (0.5,) * 3),
                                         image_std=d.get("image_std", (0.5,) * 3))

    @classmethod
    def load(cls, path: str | Path) -> tuple[ModelConfig, VisionConfig]:
        """A vision model directory's config.json → (text config, vision config)."""
        return cls.from_hf_dict(read_json_object(path), source=str(path))

    @classmethod
    def from_tower_dict(cls, d: dict[str, Any], source: str, **extra) -> VisionConfig:
        """A SigLIP / CLIP vision config dict (or a whole SigLIP/CLIP model's, whose vision_config is used)."""
        if d.get("model_type") in ("siglip", "clip", "siglip2") and isinstance(d.get("vision_config"), dict):
            d = d["vision_config"] | {"model_type": d["model_type"] + "_vision_model"}
        families = {v: k for k, v in VISION_FAMILIES.items()}
        if d.get("model_type") not in families:
            raise MiniMindError(f"{source}: model_type {d.get('model_type')!r} is not a vision tower this model "
                                f"computes ({', '.join(families)}; a SigLIP2 NaFlex tower is not)")
        family = families[d["model_type"]]
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names and k != "model_type"}
        kwargs.setdefault("hidden_act", "gelu_pytorch_tanh" if family == "siglip" else "quick_gelu")
        kwargs.setdefault("layer_norm_eps", 1e-6 if family == "siglip" else 1e-5)
        if family == "clip":
            extra.setdefault("image_mean", (0.48145466, 0.4578275, 0.40821073))
            extra.setdefault("image_std", (0.26862954, 0.26130258, 0.27577711))
        try:
            return cls(family=family, **kwargs, **extra)
        except (TypeError, MiniMindError) as e:
            raise MiniMindError(f"{source}: {e}") from None


PRESETS: dict[str, ModelConfig] = {
    # The reference's current models.
    "minimind-3": ModelConfig(),
    "minimind-3-moe": ModelConfig(num_experts=4, num_experts_per_tok=1),
    # MiniMind-Linear's experiment (discussion #704): layers 3 and 7 keep attention, the other six are Gated
    # DeltaNet with 8 heads of 96 for q, k and v and a width-4 convolution (71.12M parameters, as reported).
    "minimind-3-hybrid": ModelConfig(layer_types=["linear_attention"] * 3 + ["full_attention"]
                                     + ["linear_attention"] * 3 + ["full_attention"]),
    # The reference's previous generation (shapes only; the architecture is Qwen3 here, with qk-norm).
    "minimind2-small": ModelConfig(hidden_size=512, num_hidden_layers=8, num_attention_heads=8,
                                   num_key_value_heads=2, head_dim=64,
                                   intermediate_size=_swiglu_width(512, 8 / 3), rms_norm_eps=1e-5),
    "minimind2": ModelConfig(hidden_size=768, num_hidden_layers=16, num_attention_heads=8, num_key_value_heads=2,
                             head_dim=96, intermediate_size=_swiglu_width(768, 8 / 3), rms_norm_eps=1e-5),
    # Its MoE: 4 routed experts, top-2; the reference's extra shared expert has no Qwen3-MoE equivalent and is left out.
    "minimind2-moe": ModelConfig(hidden_size=640, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=2,
                                 head_dim=80, intermediate_size=_swiglu_width(640, 8 / 3), rms_norm_eps=1e-5,
                                 num_experts=4, num_experts_per_tok=2,
                                 moe_intermediate_size=_swiglu_width(640, 8 / 3)),
    # A CPU-sized model for the quickstart: minutes on a laptop.
    "mini": ModelConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                        head_dim=64, intermediate_size=_swiglu_width(256, 8 / 3)),
    # The decoder of the CPU vision job (mini-v): narrow, so that minutes buy thousands of steps.
    "micro": ModelConfig(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=32, intermediate_size=384),
    # Test models: seconds on one CPU core.
    "tiny": ModelConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        head_dim=16, intermediate_size=192, max_position_embeddings=2048),
    "tiny-moe": ModelConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                            head_dim=16, intermediate_size=192, max_position_embeddings=2048,
                            num_experts=4, num_experts_per_tok=2, moe_intermediate_size=96),
    "tiny-hybrid": ModelConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                               head_dim=16, intermediate_size=192, max_position_embeddings=2048,
                               layer_types=["linear_attention", "full_attention"], linear_key_head_dim=16,
                               linear_value_head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4),
}


def preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise MiniMindError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name])


# Vision-language models: (text preset, vision tower). minimind-3v is the reference's MiniMind-V (SigLIP2 ViT-B/32
# at 256² → 64 tokens per image, on minimind-3); the small ones train from nothing on a CPU.
VISION_PRESETS: dict[str, tuple[str, VisionConfig]] = {
    "minimind-3v": ("minimind-3", VisionConfig()),
    "minimind-3v-moe": ("minimind-3-moe", VisionConfig()),
    "mini-v": ("micro", VisionConfig(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                                    image_size=64, patch_size=16)),
    "tiny-v": ("tiny", VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                    image_size=32, patch_size=8)),
}


def vision_preset(name: str) -> tuple[ModelConfig, VisionConfig]:
    if name not in VISION_PRESETS:
        raise MiniMindError(f"unknown vision preset {name!r}; choose from {', '.join(VISION_PRESETS)}")
    text, vision = VISION_PRESETS[name]
    return preset(text), dataclasses.replace(vision)


MINIMIND_O = ("minimind_o", "MiniMindOForConditionalGeneration")


@dataclass
class AudioConfig:
    """The speech side of an omni model (MiniMind-O's layout, every part trained here; `minimind.model.omni`).

    Hearing: 16 kHz audio → 80-bin log-mel at 100 frames/s → an encoder (two convolutions, the second of stride 2,
    then frames stacked by 4: 12.5 tokens/s; `encoder_layers` transformer layers of `encoder_size`) → a projector
    (LayerNorm, Linear, GELU, Linear) into the language model's width → one `<|audio_pad|>` (audio_token_id) position
    per token. Speaking: a Talker of `talker_layers` decoder layers reads the Thinker's hidden state after layer
    `bridge_layer` (−1: the middle one, num_hidden_layers // 2 − 1, as MiniMind-O) and predicts `codebooks` streams
    of audio units in parallel, one frame per text position with a one-step delay per codebook; the units are a
    residual k-means codebook of `codebook_size` entries over `unit_frames` log-mel frames (`minimind.model.codec`),
    turned back into sound by Griffin-Lim.
    """
    n_mels: int = 80
    encoder_size: int = 128
    encoder_layers: int = 2
    encoder_heads: int = 4
    audio_token_id: int = 16
    talker_layers: int = 2                 # 0: a model that hears but does not speak
    bridge_layer: int = -1
    codebooks: int = 8
    codebook_size: int = 256
    unit_frames: int = 8                   # log-mel frames per unit frame: 8 × 10 ms = 80 ms (Mimi's 12.5 Hz)
    stop_weight: float = 10.0              # the stop unit's weight in the Talker's loss (MiniMind-O: ×10)
    ctc_head: bool = True                  # a CTC head on the encoder: it learns to hear from transcripts directly

    def __post_init__(self):
        for name in ("n_mels", "encoder_size", "encoder_layers", "encoder_heads", "codebooks", "codebook_size",
                     "unit_frames"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise MiniMindError(f"audio config field '{name}' must be a positive integer, got {value!r}")
        if not isinstance(self.talker_layers, int) or self.talker_layers < 0:
            raise MiniMindError(f"audio config field 'talker_layers' must be ≥ 0, got {self.talker_layers!r}")
        if self.encoder_size % self.encoder_heads:
            raise MiniMindError(f"audio config: encoder_size ({self.encoder_size}) must be a multiple of "
                                f"encoder_heads ({self.encoder_heads})")

    @property
    def pad_unit(self) -> int:
        """The Talker's 'no unit here' id (before a codebook starts, after it stops)."""
        return self.codebook_size

    @property
    def stop_unit(self) -> int:
        return self.codebook_size + 1

    @property
    def unit_vocab(self) -> int:
        """Units per codebook: the codebook's entries, pad and stop."""
        return self.codebook_size + 2

    def bridge(self, text: ModelConfig) -> int:
        """The Thinker layer whose output the Talker reads (0-based)."""
        layer = text.num_hidden_layers // 2 - 1 if self.bridge_layer == -1 else self.bridge_layer
        if not 0 <= layer < text.num_hidden_layers:
            raise MiniMindError(f"audio config field 'bridge_layer' must name a layer 0–{text.num_hidden_layers - 1}"
                                f" (or -1), got {self.bridge_layer}")
        return layer

    def replace(self, **changes) -> AudioConfig:
        return dataclasses.replace(self, **changes)

    def to_hf_dict(self, text: ModelConfig, dtype: str = "float32") -> dict[str, Any]:
        """config.json of an omni model: our own architectures name (no stock class computes it), the Thinker's
        Qwen3 config as text_config."""
        return {"architectures": [MINIMIND_O[1]], "model_type": MINIMIND_O[0], "text_config": text.to_hf_dict(dtype),
                "audio_config": dataclasses.asdict(self), "audio_token_index": self.audio_token_id,
                "tie_word_embeddings": text.tie_word_embeddings, "torch_dtype": dtype}

    @classmethod
    def load(cls, path: str | Path) -> tuple[ModelConfig, AudioConfig]:
        """An omni model directory's config.json → (text config, audio config)."""
        d, source = read_json_object(path), str(path)
        for key in ("text_config", "audio_config"):
            if not isinstance(d.get(key), dict):
                raise MiniMindError(f"{source}: missing object '{key}'")
        text = ModelConfig.from_hf_dict(d["text_config"], source=f"{source}: text_config")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d["audio_config"]) - names)
        if unknown:
            raise MiniMindError(f"{source}: audio_config has unknown field '{unknown[0]}'")
        try:
            return text, cls(**d["audio_config"])
        except TypeError as e:
            raise MiniMindError(f"{source}: audio_config: {e}") from None


# Omni models: (text preset, audio side). minimind-3o is MiniMind-O's shape (a 4-layer Talker of the Thinker's width,
# 8 codebooks); the small ones train from nothing on a CPU in minutes.
OMNI_PRESETS: dict[str, tuple[str, AudioConfig]] = {
    "minimind-3o": ("minimind-3", AudioConfig(encoder_size=512, encoder_layers=4, encoder_heads=8, talker_layers=4,
                                              codebook_size=1024)),
    "mini-o": ("micro", AudioConfig()),
    "tiny-o": ("tiny", AudioConfig(encoder_size=32, encoder_layers=1, encoder_heads=2, talker_layers=1, codebooks=4,
                                   codebook_size=16)),
}


def omni_preset(name: str) -> tuple[ModelConfig, AudioConfig]:
    if name not in OMNI_PRESETS:
        raise MiniMindError(f"unknown omni preset {name!r}; choose from {', '.join(OMNI_PRESETS)}")
    text, audio = OMNI_PRESETS[name]
    return preset(text), dataclasses.replace(audio)
