"""Device and dtype choice, shared by every command."""

from __future__ import annotations

import ctypes
import sys

import torch

from minimind.errors import MiniMindError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """None or "auto" → cuda, then mps, then cpu; anything else is checked to exist."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(device)
    except RuntimeError as e:
        raise MiniMindError(f"unknown device {device!r} ({e})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MiniMindError("device 'cuda' requested but CUDA is not available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise MiniMindError("device 'mps' requested but MPS is not available")
    return device


def resolve_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    if name is None or isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise MiniMindError(f"unknown dtype {name!r}; choose from {', '.join(DTYPES)}")
    return DTYPES[name]


def keep_freed_memory() -> None:
    """Make glibc reuse freed memory for large CPU tensors instead of returning it to the OS.

    glibc's default places blocks over 32 MiB (a batch's logits, its MLP activations) in fresh mmap'd pages and
    unmaps them when freed. Every step then page-faults that memory in again. With mmap off and the heap never
    trimmed, the pages stay mapped and are reused (the speed-up is measured in docs/performance.md). The
    price is a process that keeps its peak heap: fine for training, which reaches its peak every step. Linux with
    glibc only; elsewhere this does nothing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(-4, 0)                  # M_MMAP_MAX = 0: no mmap'd blocks
    libc.mallopt(-1, 2**31 - 1)          # M_TRIM_THRESHOLD: never give the top of the heap back
