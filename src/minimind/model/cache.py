"""A static (preallocated) key/value cache for incremental decoding."""

from __future__ import annotations

import torch

from minimind.config import ModelConfig


class KVCache:
    """Keys and values of every layer, preallocated as [layers, B, kv_heads, max_len, head_dim].

    All rows share one write position, `length`: a batch of prompts of different lengths is left-padded and
    the padding is hidden by the attention mask the caller passes (covering all `length + T` positions).
    Create it in the dtype the model computes in (e.g. bf16 under autocast).

    Static-shape decoding (what torch.compile wants): set `write_at` to a one-element long tensor; `update`
    then writes its single new position there and returns the whole cache, whose unwritten positions the
    caller's mask hides. The caller advances `write_at` in place, so no shape or Python int changes per step.
    """

    def __init__(self, config: ModelConfig, batch_size: int, max_len: int, device=None,
                 dtype: torch.dtype = torch.float32):
        shape = (config.num_hidden_layers, batch_size, config.num_key_value_heads, max_len, config.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0            # positions already written (a host int: no device sync to read it)
        self.write_at: torch.Tensor | None = None

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v [B, kv_heads, T, d] at positions length…length+T-1; return all keys/values so far."""
        if self.write_at is not None:
            self.k[layer].index_copy_(2, self.write_at, k)
            self.v[layer].index_copy_(2, self.write_at, v)
            return self.k[layer], self.v[layer]
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; {end} were requested")
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def repeat_rows(self, n: int) -> None:
        """Each row becomes n consecutive rows (n samples continuing one shared prefill)."""
        self.k = self.k.repeat_interleave(n, dim=1)
        self.v = self.v.repeat_interleave(n, dim=1)

    def advance(self, n: int) -> None:
        """Called by the model once every layer has written its n new positions."""
        self.length += n
