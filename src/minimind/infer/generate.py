"""Token-level generation for one prompt: prefill once, then decode one token per step through the KV cache.

    next = argmax(logits)                          temperature == 0
    next ~ softmax(top_k(logits) / temperature)    otherwise
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from minimind.errors import MiniMindError
from minimind.model.cache import KVCache
from minimind.model.transformer import Transformer


@torch.inference_mode()
def generate(model: Transformer, prompt: list[int], max_new_tokens: int, temperature: float = 0.0,
             top_k: int = 0, seed: int | None = None, stop: tuple[int, ...] = ()) -> Iterator[int]:
    """Yield up to max_new_tokens sampled token ids, ending after the first one in `stop`."""
    if not prompt:
        raise MiniMindError("the prompt is empty")
    if temperature < 0:
        raise MiniMindError(f"temperature must be >= 0, got {temperature}")
    if max_new_tokens < 1:
        raise MiniMindError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if not all(0 <= t < model.config.vocab_size for t in prompt):
        raise MiniMindError(f"prompt token ids must be in 0..{model.config.vocab_size - 1}")
    device = model.lm_head.weight.device
    max_len = min(len(prompt) + max_new_tokens, model.config.max_position_embeddings)
    if len(prompt) >= max_len:
        raise MiniMindError(f"the prompt has {len(prompt)} tokens; the model's context is "
                         f"{model.config.max_position_embeddings}")
    cache = KVCache(model.config, 1, max_len, device=device, dtype=model.lm_head.weight.dtype)
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    ids = torch.tensor([prompt], device=device)
    for _ in range(max_len - len(prompt)):
        logits = model(ids, cache=cache, logits_to_keep=1).logits[:, -1].float()    # [1, vocab]
        if temperature == 0:
            ids = logits.argmax(dim=-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k:
                kth = logits.topk(min(top_k, logits.shape[-1])).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            ids = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)
        token = ids.item()
        yield token
        if token in stop:
            return
