"""Generation: the engine (static KV cache, batched prefill and decode, sampling, stops, streaming)."""

from minimind.infer.engine import Completion, Delta, Engine
from minimind.infer.sampling import SamplingParams

__all__ = ["Completion", "Delta", "Engine", "SamplingParams"]
