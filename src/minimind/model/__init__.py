"""The Qwen3-compatible decoder (dense and MoE), its KV cache and its directory format."""

from minimind.model.cache import KVCache
from minimind.model.io import load_model, save_model
from minimind.model.transformer import ModelOutput, Transformer

__all__ = ["KVCache", "ModelOutput", "Transformer", "load_model", "save_model"]
