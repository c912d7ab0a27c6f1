"""The Qwen3-compatible decoder (dense and MoE), its KV cache and its directory format."""

from minimind.model.cache import KVCache
from minimind.model.io import is_reward_model, load_model, load_reward_model, save_model
from minimind.model.reward import RewardModel
from minimind.model.transformer import ModelOutput, Transformer

__all__ = ["KVCache", "ModelOutput", "RewardModel", "Transformer", "is_reward_model", "load_model",
           "load_reward_model", "save_model"]
