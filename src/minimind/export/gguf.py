"""A model directory → one GGUF file that llama.cpp (and so ollama, LM Studio, llama-cpp-python) runs as is.

    metadata   general.*, {arch}.* hyper-parameters (arch = qwen3 | qwen3moe), tokenizer.ggml.*: the byte-level
               BPE vocabulary and merges, token types, special ids, the chat template
    tensors    token_embd, blk.{i}.attn_{norm,q,k,v,output,q_norm,k_norm}, blk.{i}.ffn_{norm,gate,up,down}
               (MoE: ffn_gate_inp and the stacked ffn_{gate,up,down}_exps [E, ...]), output_norm, output (untied)

Qwen3 uses NeoX-style RoPE (rotate halves), which llama.cpp applies for these architectures, so q/k weights are
written unpermuted. Norm weights stay f32; matrices take the chosen dtype (q8_0: blocks of 32 int8 values and
one f16 scale). The writer is the `gguf` package's; the mapping, tokenizer metadata and checks are ours.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from minimind.config import ModelConfig
from minimind.errors import MiniMindError
from minimind.fileio import atomic_write_text
from minimind.model.io import from_checkpoint, read_tensors
from minimind.tokenizer import tokenizer_dir

DTYPES = ("f32", "f16", "bf16", "q8_0")

# our (transformers') tensor name inside a layer → GGUF's
LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
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


def export_gguf(model_dir: str | Path, out: str | Path, dtype: str = "f16") -> Path:
    """Write the model at `model_dir` (a Qwen3 / Qwen3-MoE directory) to the GGUF file `out`, atomically."""
    import gguf

    model_dir, out = Path(model_dir), Path(out)
    if dtype not in DTYPES:
        raise MiniMindError(f"--dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    config = ModelConfig.load(model_dir / "config.json")
    _check_exportable(config, model_dir)
    state = from_checkpoint(read_tensors(model_dir), config)
    arch = "qwen3moe" if config.is_moe else "qwen3"

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
    if config.is_moe and config.num_experts_per_tok > 1 and not config.norm_topk_prob:
        # llama.cpp's qwen3moe graph always renormalises the top-k gate weights
        raise MiniMindError(f"{model_dir / 'config.json'}: norm_topk_prob is false with top-"
                            f"{config.num_experts_per_tok} routing, which llama.cpp's qwen3moe cannot express")


def _write_hparams(writer, config: ModelConfig, name: str, dtype: str) -> None:
    import gguf

    writer.add_name(name)
    writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                          "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype])
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
    """Byte-level BPE as llama.cpp's "gpt2" tokenizer model with the GPT-2 pre-tokenizer regex (ours), every id
    below config.vocab_size named (ids the tokenizer lacks become unused [PAD{i}] entries)."""
    import gguf

    path = directory / "tokenizer.json"
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
        model, pre = spec["model"], spec.get("pre_tokenizer") or {}
        vocab, merges, added = model["vocab"], model["merges"], spec.get("added_tokens", [])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MiniMindError(f"{path}: not a readable tokenizer.json ({e})") from None
    if model.get("type") != "BPE" or pre.get("type") != "ByteLevel" or not pre.get("use_regex", True):
        raise MiniMindError(f"{path}: only a byte-level BPE with the GPT-2 split regex exports to GGUF "
                            f"(model {model.get('type')!r}, pre_tokenizer {pre.get('type')!r})")
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
    writer.add_tokenizer_pre("gpt-2")
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
    """(numpy data, GGML type) for one tensor: vectors stay f32, matrices take `dtype` (q8_0 needs rows that are
    whole 32-value blocks; other rows fall back to f16, as llama.cpp's own converter does)."""
    import gguf

    data = tensor.float().numpy()
    if data.ndim == 1 or dtype == "f32":
        return data, gguf.GGMLQuantizationType.F32
    if dtype == "q8_0" and data.shape[-1] % 32 != 0:
        dtype = "f16"
    qtype = {"f16": gguf.GGMLQuantizationType.F16, "bf16": gguf.GGMLQuantizationType.BF16,
             "q8_0": gguf.GGMLQuantizationType.Q8_0}[dtype]
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
