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

    A sliding-window layer keeps a **ring** of `window` slots instead: position p lives in slot p mod window, and
    `slot_pos` [B, window] says which position each slot holds (−1: none), so its memory stays fixed however long
    the context grows. A prefill attends to the ring as it was plus the new positions, then writes the last
    `window` of them; a decode step claims its slot first (`claim_slots`), then every ring layer writes it and
    attends to the whole ring. The model builds the ring layers' masks from `slot_pos`.
    """

    def __init__(self, config: ModelConfig, batch_size: int, max_len: int, device=None,
                 dtype: torch.dtype = torch.float32):
        self.windows = [config.window(i) for i in range(config.num_hidden_layers)]
        self.window = config.sliding_window if config.is_windowed else None
        linear = [t == "linear_attention" for t in config.attention_types]
        shape = lambda n: (batch_size, config.num_key_value_heads, n, config.head_dim)  # noqa: E731
        self.k = [torch.zeros(shape(0 if lin else w or max_len), device=device, dtype=dtype)
                  for w, lin in zip(self.windows, linear, strict=True)]
        self.v = [torch.zeros(shape(0 if lin else w or max_len), device=device, dtype=dtype)
                  for w, lin in zip(self.windows, linear, strict=True)]
        # A DeltaNet layer's cache: the convolution's last kernel−1 inputs and the state S, fixed in size (fp32)
        c = config
        conv = 2 * c.linear_num_key_heads * c.linear_key_head_dim + c.linear_num_value_heads * c.linear_value_head_dim
        self.tails = {i: torch.zeros(batch_size, conv, c.linear_conv_kernel_dim - 1, device=device, dtype=dtype)
                      for i, lin in enumerate(linear) if lin}
        self.states = {i: torch.zeros(batch_size, c.linear_num_value_heads, c.linear_key_head_dim,
                                      c.linear_value_head_dim, device=device) for i, lin in enumerate(linear) if lin}
        self.capacity = max_len    # positions a row can hold (a ring layer holds the last `window` of them)
        self.slot_pos = (torch.full((batch_size, self.window), -1, dtype=torch.long, device=device)
                         if self.window else None)
        self.length = 0            # positions written (prefill) or attended to (decoding): a host int, no sync
        self.write_at: torch.Tensor | None = None

    @property
    def max_len(self) -> int:
        return self.capacity

    @property
    def batch_size(self) -> int:
        """Rows held (a compiled decode step may run more rows than a batch has live)."""
        return self.k[0].shape[0]

    def linear_state(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A DeltaNet layer's (convolution tail [B, conv, kernel−1], state [B, H, d_k, d_v])."""
        return self.tails[layer], self.states[layer]

    def save_linear_state(self, layer: int, tail: torch.Tensor, state: torch.Tensor) -> None:
        """Written in place (the compiled decode step sees no new tensors)."""
        self.tails[layer].copy_(tail)
        self.states[layer].copy_(state)

    def _rows(self, fn) -> None:
        """Apply a row operation to the per-row tensors beside k and v."""
        if self.window:
            self.slot_pos = fn(self.slot_pos)
        self.tails = {i: fn(t) for i, t in self.tails.items()}
        self.states = {i: fn(t) for i, t in self.states.items()}

    def claim_slots(self) -> None:
        """Decoding: each row's ring slot for its position `write_at` now holds that position."""
        if self.window:
            rows = torch.arange(self.slot_pos.shape[0], device=self.slot_pos.device)
            self.slot_pos[rows, self.write_at % self.window] = self.write_at

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v [B, kv_heads, T, d]; return the keys/values to attend to [B, kv_heads, S, d] (a ring layer:
        the whole ring, and in a prefill the new positions after it)."""
        if self.windows[layer]:
            return self._update_ring(layer, k, v)
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

    def _update_ring(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ring_k, ring_v, window = self.k[layer], self.v[layer], self.windows[layer]
        if self.write_at is not None:
            rows = torch.arange(k.shape[0], device=k.device)
            ring_k[rows, :, self.write_at % window] = k[:, :, 0].to(ring_k.dtype)
            ring_v[rows, :, self.write_at % window] = v[:, :, 0].to(ring_v.dtype)
            return ring_k, ring_v
        keys, values = torch.cat([ring_k, k.to(ring_k.dtype)], 2), torch.cat([ring_v, v.to(ring_v.dtype)], 2)
        T = k.shape[2]
        kept = min(T, window)                         # only the last `window` new positions can be seen again
        slots = torch.arange(self.length + T - kept, self.length + T, device=k.device) % window
        ring_k[:, :, slots] = k[:, :, T - kept:].to(ring_k.dtype)
        ring_v[:, :, slots] = v[:, :, T - kept:].to(ring_v.dtype)
        return keys, values

    def advance(self, n: int) -> None:
        """Called by the model once every layer has written its n new positions (prefill mode)."""
        if self.write_at is None:
            if self.window:
                kept = min(n, self.window)
                positions = torch.arange(self.length + n - kept, self.length + n, device=self.slot_pos.device)
                self.slot_pos[:, positions % self.window] = positions
            self.length += n

    # ---- reshaping the batch (between steps) ----------------------------------------------------------------

    def repeat_rows(self, repeats: torch.Tensor) -> None:
        """Row i becomes repeats[i] consecutive rows (samples continuing one shared prefill)."""
        self.k = [k.repeat_interleave(repeats, dim=0) for k in self.k]
        self.v = [v.repeat_interleave(repeats, dim=0) for v in self.v]
        self._rows(lambda t: t.repeat_interleave(repeats, dim=0))

    def select_rows(self, index: torch.Tensor) -> None:
        self.k, self.v = [k[index] for k in self.k], [v[index] for v in self.v]
        self._rows(lambda t: t[index])

    def grow(self, capacity: int) -> None:
        """Reallocate to hold `capacity` positions per row, keeping what is written (rings keep their size)."""
        if capacity > self.capacity:
            pad = (0, 0, 0, capacity - self.capacity)
            fixed = [w or i in self.states for i, w in enumerate(self.windows)]     # rings and DeltaNet layers
            self.k = [k if f else torch.nn.functional.pad(k, pad) for k, f in zip(self.k, fixed, strict=True)]
            self.v = [v if f else torch.nn.functional.pad(v, pad) for v, f in zip(self.v, fixed, strict=True)]
            self.capacity = capacity

    def extend(self, other: KVCache) -> None:
        """Append other's rows (after growing both to the larger capacity)."""
        capacity = max(self.max_len, other.max_len)
        self.grow(capacity)
        other.grow(capacity)
        self.k = [torch.cat(pair) for pair in zip(self.k, other.k, strict=True)]
        self.v = [torch.cat(pair) for pair in zip(self.v, other.v, strict=True)]
        if self.window:
            self.slot_pos = torch.cat([self.slot_pos, other.slot_pos])
        self.tails = {i: torch.cat([t, other.tails[i]]) for i, t in self.tails.items()}
        self.states = {i: torch.cat([t, other.states[i]]) for i, t in self.states.items()}
