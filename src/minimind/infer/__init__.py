"""Generation: the engine (static KV cache, batched prefill and decode, sampling, stops, streaming), and the
diffusion sampler behind the same interface."""

from minimind.infer.diffusion import DiffusionEngine, DiffusionParams, engine_for
from minimind.infer.engine import Completion, Delta, Engine
from minimind.infer.sampling import SamplingParams

__all__ = ["Completion", "Delta", "DiffusionEngine", "DiffusionParams", "Engine", "SamplingParams", "engine_for"]
