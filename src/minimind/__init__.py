"""MiniMind: train a small Qwen3-style language model from scratch, end to end, in plain PyTorch."""

from minimind.config import PRESETS, ModelConfig, preset
from minimind.errors import MiniMindError
from minimind.model import KVCache, Transformer, load_model
from minimind.tokenizer import Tokenizer, load_tokenizer

__version__ = "0.1.0"
__all__ = ["PRESETS", "KVCache", "MiniMindError", "ModelConfig", "Tokenizer", "Transformer", "load_model",
           "load_tokenizer", "preset", "__version__"]
