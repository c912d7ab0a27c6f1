"""A model directory → an ONNX decoder with the KV cache as inputs and outputs, for onnxruntime.

    inputs   input_ids [B, T] int64, attention_mask [B, P+T] int64 (1 = token, 0 = left padding),
             past_key.{i}, past_value.{i} [B, kv_heads, P, head_dim] float32 for every layer i (P may be 0)
    outputs  logits [B, T, vocab], present_key.{i}, present_value.{i} [B, kv_heads, P+T, head_dim]

Prefill passes P = 0 caches; each decode step feeds the presents back as the next pasts, with one more 1 in the
mask. The graph is our own forward pass traced by torch.export (the dynamo exporter), with a cache that
concatenates instead of writing into a preallocated buffer. The directory also gets config.json and the
tokenizer files, so it is self-contained. `OnnxModel` runs it.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from minimind.errors import MiniMindError
from minimind.fileio import atomic_directory
from minimind.model.io import load_model
from minimind.tokenizer import tokenizer_dir
from minimind.tokenizer.tokenizer import FILES

GRAPH = "model.onnx"


class ConcatCache:
    """The KV cache as values: `update` returns past ⧺ new along the sequence and keeps it as the present."""

    write_at = None

    def __init__(self, past: list[tuple[torch.Tensor, torch.Tensor]]):
        self.past, self.present = past, [None] * len(past)
        self.length = past[0][0].shape[2]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        past_k, past_v = self.past[layer]
        self.present[layer] = (torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2))
        return self.present[layer]

    def advance(self, n: int) -> None:
        pass


class Decoder(nn.Module):
    """(input_ids, attention_mask, k0, v0, k1, v1, …) → (logits, present k0, v0, …)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, *past):
        cache = ConcatCache(list(zip(past[0::2], past[1::2], strict=True)))
        hidden, _ = self.model.model(input_ids, attention_mask, cache=cache)
        return (self.model.lm_head(hidden), *(t for kv in cache.present for t in kv))


def io_names(layers: int) -> tuple[list[str], list[str]]:
    past = [f"past_{kind}.{i}" for i in range(layers) for kind in ("key", "value")]
    present = [f"present_{kind}.{i}" for i in range(layers) for kind in ("key", "value")]
    return ["input_ids", "attention_mask", *past], ["logits", *present]


def export_onnx(model_dir: str | Path, out: str | Path, dtype: str = "f32") -> Path:
    """Write `out`/model.onnx (+ config and tokenizer files) for the model at `model_dir`, atomically."""
    if dtype != "f32":
        raise MiniMindError(f"--outtype {dtype!r}: the ONNX export is f32")
    model = load_model(model_dir, device="cpu", dtype=torch.float32)
    config = model.config
    if config.plain_decoder_problem():
        raise MiniMindError(f"{model_dir}: {config.plain_decoder_problem()}; the ONNX decoder (keys and values in, "
                            "keys and values out, causal) does not compute it")
    if config.is_moe:
        raise MiniMindError(f"{model_dir}: MoE models do not export to ONNX (expert routing is data-dependent); "
                            "use GGUF")
    inputs, outputs = io_names(config.num_hidden_layers)
    B, T, P = 2, 3, 4           # example sizes; all three are dynamic (0 and 1 included at run time)
    cache_shape = (B, config.num_key_value_heads, P, config.head_dim)
    example = (torch.randint(0, config.vocab_size, (B, T)), torch.ones(B, P + T, dtype=torch.long),
               *(torch.zeros(cache_shape) for _ in range(2 * config.num_hidden_layers)))
    dyn = torch.export.Dim.DYNAMIC           # sizes and their relation (mask = past + seq) are inferred
    dynamic = ({0: dyn, 1: dyn}, {0: dyn, 1: dyn}, tuple({0: dyn, 2: dyn} for _ in example[2:]))
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)  # torchvision notes
    with atomic_directory(out, marker=GRAPH) as tmp:
        with torch.no_grad():
            program = torch.onnx.export(Decoder(model), example, dynamo=True, input_names=inputs,
                                        output_names=outputs, dynamic_shapes=dynamic, verbose=False)
        program.save(str(tmp / GRAPH))
        shutil.copy(Path(model_dir) / "config.json", tmp / "config.json")
        for name in FILES:
            shutil.copy(tokenizer_dir(model_dir) / name, tmp / name)
    return Path(out)


class OnnxModel:
    """An exported decoder in onnxruntime: `forward` one step, `greedy` to generate."""

    def __init__(self, directory: str | Path, threads: int | None = None):
        import onnxruntime as ort

        path = Path(directory) / GRAPH
        if not path.is_file():
            raise MiniMindError(f"{path}: file not found (write it with `minimind export onnx`)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.layers = (len(self.inputs) - 2) // 2
        kv = self.session.get_inputs()[2].shape          # [batch, kv_heads, past, head_dim]
        self.kv_heads, self.head_dim = kv[1], kv[3]

    def empty_cache(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, self.kv_heads, 0, self.head_dim), np.float32) for _ in range(2 * self.layers)]

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray, past: list[np.ndarray]
                ) -> tuple[np.ndarray, list[np.ndarray]]:
        """input_ids [B, T], attention_mask [B, P+T], past caches → (logits [B, T, V], present caches)."""
        feed = dict(zip(self.inputs, [input_ids.astype(np.int64), attention_mask.astype(np.int64), *past],
                        strict=True))
        logits, *present = self.session.run(None, feed)
        return logits, present

    def greedy(self, ids: list[int], max_new_tokens: int, stop_ids: set[int] = frozenset()) -> list[int]:
        tokens, out, past = np.array([ids]), [], self.empty_cache(1)
        mask = np.ones((1, len(ids)), np.int64)
        for _ in range(max_new_tokens):
            logits, past = self.forward(tokens, mask, past)
            token = int(logits[0, -1].argmax())
            out.append(token)
            if token in stop_ids:
                break
            tokens, mask = np.array([[token]]), np.concatenate([mask, np.ones((1, 1), np.int64)], axis=1)
        return out
