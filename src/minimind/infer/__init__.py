"""Generation from a model: the decoding loop over the static KV cache."""

from minimind.infer.generate import generate

__all__ = ["generate"]
