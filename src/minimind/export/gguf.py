"""GGUF, llama.cpp's file format, both ways: a model directory → one GGUF file that llama.cpp (and so ollama,
LM Studio, llama-cpp-python) runs as is, and a GGUF file → a model directory (dequantized) for training.

    metadata   general.*, {arch}.* hyper-parameters (arch = qwen3 | qwen3moe | qwen2 | llama), tokenizer.ggml.*:
               the byte-level BPE vocabulary and merges, token types, special ids, the chat template
    tensors    token_embd, blk.{i}.attn_{norm,q,k,v,output,q_norm,k_norm}, blk.{i}.ffn_{norm,gate,up,down}
               (MoE: ffn_gate_inp and the stacked ffn_{gate,up,down}_exps [E, ...]), output_norm, output (untied)

transformers' checkpoints rotate halves in RoPE (NeoX style). llama.cpp does the same for qwen2/qwen3, so their
q/k weights go over as they are; for `llama` it rotates adjacent pairs, so llama.cpp's converter permutes the
rows of q and k within each head (`permute_qk`), and the import undoes it. Norm weights stay f32; matrices take
the chosen dtype (q8_0: blocks of 32 int8 values and one f16 scale). Reading and writing use the `gguf`
package; the mapping, tokenizer metadata and checks are ours.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from minimind.config import ModelConfig
from minimind.errors import MiniMindError
from minimind.fileio import atomic_directory, atomic_write_text
from minimind.model.io import from_checkpoint, read_tensors
from minimind.tokenizer import tokenizer_dir

DTYPES = ("f32", "f16", "bf16", "q8_0", "q4_0")

# our (transformers') tensor name inside a layer → GGUF's
LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "mlp.gate.weight": "ffn_gate_inp.weight",
    "mlp.experts.gate_proj": "ffn_gate_exps.weight",
    "mlp.experts.up_proj": "ffn_up_exps.weight",
    "mlp.experts.down_proj": "ffn_down_exps.weight",
}
TOP_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}


def gguf_name(name: str) -> str:
    """Our state-dict name → the GGUF tensor name, e.g. model.layers.3.self_attn.q_proj.weight → blk.3.attn_q.weight."""
    if name in TOP_NAMES:
        return TOP_NAMES[name]
    prefix, _, rest = name.partition("model.layers.")
    layer, _, inner = rest.partition(".")
    if prefix or not layer.isdigit() or inner not in LAYER_NAMES:
        raise MiniMindError(f"tensor '{name}' has no GGUF counterpart")
    return f"blk.{layer}.{LAYER_NAMES[inner]}"


OUR_LAYER_NAMES = {v: k for k, v in LAYER_NAMES.items()}
OUR_TOP_NAMES = {v: k for k, v in TOP_NAMES.items()}
# GGUF architecture → (qk_norm, attention_bias, MoE)
ARCHITECTURES = {"qwen3": (True, False, False), "qwen3moe": (True, False, True), "qwen2": (False, True, False),
                 "llama": (False, False, False)}
# tokenizer.ggml.pre → the pre-tokenizer that splits text as llama.cpp does
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
               r"\s+(?!\S)|\s+")


def architecture(config: ModelConfig) -> str:
    flags = (config.qk_norm, config.attention_bias, config.is_moe)
    return next(arch for arch, f in ARCHITECTURES.items() if f == flags)


def our_name(name: str) -> str:
    """The inverse of `gguf_name`."""
    if name in OUR_TOP_NAMES:
        return OUR_TOP_NAMES[name]
    block, _, rest = name.partition(".")
    layer, _, inner = rest.partition(".")
    if block != "blk" or not layer.isdigit() or inner not in OUR_LAYER_NAMES:
        raise MiniMindError(f"GGUF tensor '{name}' has no counterpart in our model")
    return f"model.layers.{layer}.{OUR_LAYER_NAMES[inner]}"


def permute_qk(w: torch.Tensor, heads: int, inverse: bool = False) -> torch.Tensor:
    """Rows of each head reordered from halves (x0..x(d/2-1), x(d/2)..) to pairs (x0, x(d/2), x1, …) — what
    llama.cpp's converter does to Llama q/k weights — or back with `inverse`."""
    shape = w.shape
    if inverse:
        return w.reshape(heads, shape[0] // heads // 2, 2, *shape[1:]).transpose(1, 2).reshape(shape)
    return w.reshape(heads, 2, shape[0] // heads // 2, *shape[1:]).transpose(1, 2).reshape(shape)


def _permute_state_qk(state: dict[str, torch.Tensor], config: ModelConfig, inverse: bool = False) -> None:
    """`permute_qk` on every layer's q and k weight of `state`, in place."""
    for name in state:
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = config.num_attention_heads if "q_proj" in name else config.num_key_value_heads
            state[name] = permute_qk(state[name], heads, inverse)


def export_gguf(model_dir: str | Path, out: str | Path, dtype: str = "f16") -> Path:
    """Write the model at `model_dir` (a Qwen3 / Qwen3-MoE directory) to the GGUF file `out`, atomically."""
    import gguf

    model_dir, out = Path(model_dir), Path(out)
    if dtype not in DTYPES:
        raise MiniMindError(f"--outtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    config = ModelConfig.load(model_dir / "config.json")
    _check_exportable(config, model_dir)
    state = from_checkpoint(read_tensors(model_dir), config)
    arch = architecture(config)
    if arch == "llama":
        _permute_state_qk(state, config)

    tmp = out.with_name(f".{out.name}.tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(tmp, arch)
    try:
        _write_hparams(writer, config, model_dir.resolve().name, dtype)
        _write_tokenizer(writer, config, tokenizer_dir(model_dir))
        for name, tensor in state.items():
            data, qtype = _encode(tensor, dtype)
            writer.add_tensor(gguf_name(name), data, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)
    return out


def _check_exportable(config: ModelConfig, model_dir: Path) -> None:
    if config.plain_decoder_problem():
        raise MiniMindError(f"{model_dir}: {config.plain_decoder_problem()}; llama.cpp's qwen3 graph would compute "
                            "something else")
    if config.is_moe and config.num_experts_per_tok > 1 and not config.norm_topk_prob:
        # llama.cpp's qwen3moe graph always renormalises the top-k gate weights
        raise MiniMindError(f"{model_dir / 'config.json'}: norm_topk_prob is false with top-"
                            f"{config.num_experts_per_tok} routing, which llama.cpp's qwen3moe cannot express")


def _write_hparams(writer, config: ModelConfig, name: str, dtype: str) -> None:
    import gguf

    writer.add_name(name)
    writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                          "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
                          "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[dtype])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_vocab_size(config.vocab_size)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    if config.rope_scaling:
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(config.rope_scaling["factor"])
        writer.add_rope_scaling_orig_ctx_len(config.rope_scaling["original_max_position_embeddings"])
    if config.is_moe:
        writer.add_expert_count(config.num_experts)
        writer.add_expert_used_count(config.num_experts_per_tok)
        writer.add_expert_feed_forward_length(config.moe_intermediate_size)


def _write_tokenizer(writer, config: ModelConfig, directory: Path) -> None:
    """Byte-level BPE as llama.cpp's "gpt2" tokenizer model with the pre-tokenizer named by its split rule (ours
    is GPT-2's), every id below config.vocab_size named (ids the tokenizer lacks become unused [PAD{i}])."""
    import gguf

    path = directory / "tokenizer.json"
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
        model, pre = spec["model"], spec.get("pre_tokenizer") or {}
        vocab, merges, added = model["vocab"], model["merges"], spec.get("added_tokens", [])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MiniMindError(f"{path}: not a readable tokenizer.json ({e})") from None
    splitter = next((name for name, p in _splitters().items() if json.loads(p.__getstate__()) == pre), None)
    if model.get("type") != "BPE" or splitter is None:
        raise MiniMindError(f"{path}: only a byte-level BPE with a pre-tokenizer llama.cpp knows exports to GGUF "
                            f"({', '.join(_splitters())}; this one is {model.get('type')!r} with {pre!r})")
    tokens = {i: t for t, i in vocab.items()}
    types = {i: gguf.TokenType.NORMAL for i in tokens}
    for token in added:
        tokens[token["id"]] = token["content"]
        types[token["id"]] = gguf.TokenType.CONTROL if token.get("special") else gguf.TokenType.USER_DEFINED
    if max(tokens) >= config.vocab_size:
        raise MiniMindError(f"{path}: token id {max(tokens)} is outside the model's vocab_size {config.vocab_size}")
    names, kinds = [], []
    for i in range(config.vocab_size):
        names.append(tokens.get(i, f"[PAD{i}]"))
        kinds.append(types.get(i, gguf.TokenType.UNUSED))

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(splitter)
    writer.add_token_list(names)
    writer.add_token_types(kinds)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(config.bos_token_id)
    writer.add_eos_token_id(config.eos_token_id)
    writer.add_pad_token_id(config.pad_token_id)
    writer.add_add_bos_token(False)
    template = _chat_template(directory)
    if template:
        writer.add_chat_template(template)


def _chat_template(directory: Path) -> str | None:
    path = directory / "tokenizer_config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("chat_template") if path.is_file() else None
    except ValueError as e:
        raise MiniMindError(f"{path}: not valid JSON ({e})") from None


def _encode(tensor: torch.Tensor, dtype: str):
    """(numpy data, GGML type) for one tensor: vectors stay f32, matrices take `dtype` (q8_0 and q4_0 need rows
    that are whole 32-value blocks; other rows fall back to f16, as llama.cpp's own converter does)."""
    import gguf

    data = tensor.float().numpy()
    if data.ndim == 1 or dtype == "f32":
        return data, gguf.GGMLQuantizationType.F32
    if dtype in ("q8_0", "q4_0") and data.shape[-1] % 32 != 0:
        dtype = "f16"
    qtype = {"f16": gguf.GGMLQuantizationType.F16, "bf16": gguf.GGMLQuantizationType.BF16,
             "q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0}[dtype]
    return gguf.quants.quantize(data, qtype), qtype



# ollama's Go template for our chat format (the Jinja template in tokenizer/chat_template.jinja): system, tools
# schema, user / assistant / tool turns, tool calls, and the generation prompt with thinking off.
OLLAMA_TEMPLATE = '''{{- if or .System .Tools }}<|im_start|>system
{{- if .System }}
{{ .System }}
{{- end }}
{{- if .Tools }}

# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{{- range .Tools }}
{"type": "function", "function": {{ .Function }}}
{{- end }}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call>
{{- end }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ .Content }}
{{- range $j, $call := .ToolCalls }}{{ if or $.Content $j }}
{{ end }}<tool_call>
{"name": "{{ $call.Function.Name }}", "arguments": {{ $call.Function.Arguments }}}
</tool_call>
{{- end }}<|im_end|>
{{ else if eq .Role "tool" }}<|im_start|>user
<tool_response>
{{ .Content }}
</tool_response><|im_end|>
{{ end }}
{{- end }}<|im_start|>assistant
<think>

</think>

'''


def export_ollama(model_dir: str | Path, out: str | Path, dtype: str = "f16") -> Path:
    """Write `out`/model.gguf and `out`/Modelfile (template, stop tokens, default sampling), so that
    `ollama create NAME -f out/Modelfile` imports the model."""
    out = Path(out)
    export_gguf(model_dir, out / "model.gguf", dtype)
    generation = {"temperature": 0.85, "top_p": 0.85}
    path = Path(model_dir) / "generation_config.json"
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except ValueError as e:
            raise MiniMindError(f"{path}: not valid JSON ({e})") from None
        generation = {k: saved[k] for k in generation if k in saved} or generation
    lines = ["FROM ./model.gguf", f'TEMPLATE """{OLLAMA_TEMPLATE}"""',
             'PARAMETER stop "<|im_end|>"', 'PARAMETER stop "<|endoftext|>"',
             *(f"PARAMETER {k} {v}" for k, v in generation.items())]
    atomic_write_text(out / "Modelfile", "\n".join(lines) + "\n")
    return out


def import_gguf(path: str | Path, out: str | Path) -> Path:
    """Read a GGUF file (qwen3, qwen3moe, qwen2 or llama; any tensor type the gguf package dequantizes) and write
    it as a model directory at `out` (fp32 weights, tokenizer.json and tokenizer_config.json from the file's
    vocabulary, merges and chat template)."""
    import gguf

    from minimind.model.transformer import Transformer

    path = Path(path)
    try:
        reader = gguf.GGUFReader(path)
    except (OSError, ValueError) as e:
        raise MiniMindError(f"{path}: not a readable GGUF file ({e})") from None
    meta = _Metadata(reader, path)
    config = _config_from(meta, {t.name for t in reader.tensors})
    state = {}
    for t in reader.tensors:
        shape = tuple(int(n) for n in reversed(t.shape))              # GGUF lists the innermost dimension first
        data = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape)
        state[our_name(t.name)] = torch.from_numpy(data.astype("float32", copy=False).copy())
    if meta.arch == "llama":
        _permute_state_qk(state, config, inverse=True)
    with torch.device("meta"):
        model = Transformer(config)
    expected = set(model.state_dict()) - ({"lm_head.weight"} if config.tie_word_embeddings else set())
    if set(state) != expected:
        name = sorted(set(state) ^ expected)[0]
        raise MiniMindError(f"{path}: tensor '{gguf_name(name)}' is {'missing' if name in expected else 'unexpected'}")
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    with atomic_directory(out, marker="config.json") as tmp:
        model.save(tmp)
        _tokenizer_from(meta).save(str(tmp / "tokenizer.json"))
        (tmp / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(meta), indent=2, ensure_ascii=False)
                                                   + "\n")
    return Path(out)


class _Metadata:
    """The key/value metadata of a GGUF file, with errors that name the file and the key."""

    def __init__(self, reader, path: Path):
        self.fields, self.path = reader.fields, path
        self.arch = self.get("general.architecture")
        if self.arch not in ARCHITECTURES:
            raise MiniMindError(f"{path}: architecture {self.arch!r} is not one we read "
                                f"({', '.join(ARCHITECTURES)})")

    def get(self, key: str, default=...):
        key = key.replace("{arch}", getattr(self, "arch", ""))
        if key not in self.fields:
            if default is ...:
                raise MiniMindError(f"{self.path}: metadata key '{key}' is missing")
            return default
        return self.fields[key].contents()


def _config_from(meta: _Metadata, tensors: set[str]) -> ModelConfig:
    qk_norm, attention_bias, moe = ARCHITECTURES[meta.arch]
    hidden, heads = meta.get("{arch}.embedding_length"), meta.get("{arch}.attention.head_count")
    scaling = meta.get("{arch}.rope.scaling.type", "none")
    if scaling not in ("none", "yarn"):
        raise MiniMindError(f"{meta.path}: rope scaling {scaling!r} is not supported (only YaRN)")
    fields = dict(
        vocab_size=len(meta.get("tokenizer.ggml.tokens")), hidden_size=hidden,
        intermediate_size=meta.get("{arch}.feed_forward_length", 1) or 1,
        num_hidden_layers=meta.get("{arch}.block_count"), num_attention_heads=heads,
        num_key_value_heads=meta.get("{arch}.attention.head_count_kv", heads),
        head_dim=meta.get("{arch}.attention.key_length", hidden // heads),
        max_position_embeddings=meta.get("{arch}.context_length"),
        rope_theta=_float32(meta.get("{arch}.rope.freq_base", 10000.0)),
        rms_norm_eps=_float32(meta.get("{arch}.attention.layer_norm_rms_epsilon")),
        qk_norm=qk_norm, attention_bias=attention_bias, tie_word_embeddings="output.weight" not in tensors,
        bos_token_id=meta.get("tokenizer.ggml.bos_token_id", 1), eos_token_id=meta.get("tokenizer.ggml.eos_token_id"),
        pad_token_id=meta.get("tokenizer.ggml.padding_token_id", 0))
    if scaling == "yarn":
        fields["rope_scaling"] = {"rope_type": "yarn", "factor": meta.get("{arch}.rope.scaling.factor"),
                                  "original_max_position_embeddings":
                                      meta.get("{arch}.rope.scaling.original_context_length")}
    if moe:
        fields |= dict(num_experts=meta.get("{arch}.expert_count"),
                       num_experts_per_tok=meta.get("{arch}.expert_used_count"),
                       moe_intermediate_size=meta.get("{arch}.expert_feed_forward_length"), norm_topk_prob=True)
    try:
        return ModelConfig(**fields)
    except MiniMindError as e:
        raise MiniMindError(f"{meta.path}: {e}") from None


def _float32(x: float) -> float:
    """A float32 metadata value as the decimal it was written from (9.999999747e-06 → 1e-05)."""
    return float(f"{x:.7g}")


def _tokenizer_from(meta: _Metadata):
    """A `tokenizers` byte-level BPE equal to llama.cpp's for this file (its "gpt2" model with the named
    pre-tokenizer); control tokens become special added tokens, user-defined ones plain added tokens."""
    import gguf
    from tokenizers import AddedToken, Tokenizer, decoders, models

    if meta.get("tokenizer.ggml.model") != "gpt2":
        raise MiniMindError(f"{meta.path}: tokenizer model {meta.get('tokenizer.ggml.model')!r} is not supported "
                            "(only byte-level BPE, 'gpt2')")
    pre, splitters = meta.get("tokenizer.ggml.pre", "gpt-2"), _splitters()
    if pre not in splitters:
        raise MiniMindError(f"{meta.path}: pre-tokenizer {pre!r} is not supported ({', '.join(splitters)})")
    tokens, types = meta.get("tokenizer.ggml.tokens"), meta.get("tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges")]
    tokenizer = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges, fuse_unk=False))
    tokenizer.pre_tokenizer = splitters[pre]
    tokenizer.decoder = decoders.ByteLevel()
    added = [AddedToken(tokens[i], special=types[i] == gguf.TokenType.CONTROL, normalized=False)
             for i in range(len(tokens)) if types[i] in (gguf.TokenType.CONTROL, gguf.TokenType.USER_DEFINED)]
    tokenizer.add_tokens(added)
    return tokenizer


def _splitters() -> dict:
    """llama.cpp's pre-tokenizer names → the `tokenizers` pre-tokenizer that splits text the same way."""
    from tokenizers import Regex, pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    return {"gpt-2": byte_level,
            "smollm": pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level]),
            "qwen2": pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
                                              pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])}


def _tokenizer_config(meta: _Metadata) -> dict:
    tokens = meta.get("tokenizer.ggml.tokens")
    name = lambda key, default: tokens[meta.get(key, default)]  # noqa: E731
    config = {"tokenizer_class": "PreTrainedTokenizerFast",
              "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)), "add_eos_token": False,
              "bos_token": name("tokenizer.ggml.bos_token_id", 1), "eos_token": name("tokenizer.ggml.eos_token_id", 2),
              "pad_token": name("tokenizer.ggml.padding_token_id", 0), "clean_up_tokenization_spaces": False,
              "model_max_length": meta.get("{arch}.context_length")}
    template = meta.get("tokenizer.chat_template", None)
    return config | ({"chat_template": template} if template else {})
