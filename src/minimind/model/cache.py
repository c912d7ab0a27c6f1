"""A preallocated key/value cache for incremental decoding."""

from __future__ import annotations

import torch

from minimind.config import ModelConfig


class KVCache:
    """Keys and values of every layer, preallocated as one [B, kv_heads, capacity, head_dim] tensor per layer.

    Two ways to write:
    - Prefill (and plain incremental forwards): all rows share one write position, `length`; a batch of prompts
      of different lengths is left-padded and the padding is hidden by the attention mask the caller passes.
    - Decoding (`write_at` set, a [B] long tensor): each row writes its one new position at its own index, and
      `update` returns the first `length` positions of every row; the caller's mask hides what a row has not
      written. Rows can then start at different times (continuous batching), and with `length` = capacity no
      shape changes between steps (what torch.compile wants).
    Create it in the dtype the model computes in (e.g. bf16 under autocast). One tensor per layer, not one
    [layers, ...] tensor: under torch.compile, a write into a slice of a tensor that later layers also read is
    functionalised into a copy of that slice, every layer and every step; a write into a whole input is done
    in place.
    """

    def __init__(self, config: ModelConfig, batch_size: int, max_len: int, device=None,
                 dtype: torch.dtype = torch.float32):
        shape = (batch_size, config.num_key_value_heads, max_len, config.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_hidden_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_hidden_layers)]
        self.length = 0            # positions written (prefill) or attended to (decoding): a host int, no sync
        self.write_at: torch.Tensor | None = None

    @property
    def max_len(self) -> int:
        return self.k[0].shape[2]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v [B, kv_heads, T, d]; return the keys/values to attend to [B, kv_heads, S, d]."""
        if self.write_at is not None:                # one position per row; an index_put (CPU bf16 scatter_ is slow)
            rows = torch.arange(k.shape[0], device=k.device)
            self.k[layer][rows, :, self.write_at] = k[:, :, 0].to(self.k[layer].dtype)
            self.v[layer][rows, :, self.write_at] = v[:, :, 0].to(self.v[layer].dtype)
            return self.k[layer][:, :, :self.length], self.v[layer][:, :, :self.length]
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; {end} were requested")
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, n: int) -> None:
        """Called by the model once every layer has written its n new positions (prefill mode)."""
        if self.write_at is None:
            self.length += n

    # ---- reshaping the batch (between steps) ----------------------------------------------------------------

    def repeat_rows(self, repeats: torch.Tensor) -> None:
        """Row i becomes repeats[i] consecutive rows (samples continuing one shared prefill)."""
        self.k = [k.repeat_interleave(repeats, dim=0) for k in self.k]
        self.v = [v.repeat_interleave(repeats, dim=0) for v in self.v]

    def select_rows(self, index: torch.Tensor) -> None:
        self.k, self.v = [k[index] for k in self.k], [v[index] for v in self.v]

    def grow(self, capacity: int) -> None:
        """Reallocate to hold `capacity` positions per row, keeping what is written."""
        if capacity > self.max_len:
            pad = (0, 0, 0, capacity - self.max_len)
            self.k = [torch.nn.functional.pad(k, pad) for k in self.k]
            self.v = [torch.nn.functional.pad(v, pad) for v in self.v]

    def extend(self, other: KVCache) -> None:
        """Append other's rows (after growing both to the larger capacity)."""
        capacity = max(self.max_len, other.max_len)
        self.grow(capacity)
        other.grow(capacity)
        self.k = [torch.cat(pair) for pair in zip(self.k, other.k, strict=True)]
        self.v = [torch.cat(pair) for pair in zip(self.v, other.v, strict=True)]
