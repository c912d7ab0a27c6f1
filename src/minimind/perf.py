"""Performance accounting: peak FLOP/s of the device and model FLOPs utilisation (MFU).

    MFU = tokens/s × FLOPs/token / peak FLOP/s

FLOPs/token is `Transformer.flops_per_token` (PaLM's 6·N + 12·L·H·d·T). The peak is the GPU's published dense
bf16 tensor-core figure, or, where there is none (CPU, MPS, an unlisted GPU), a measured matmul rate.
"""

from __future__ import annotations

import time

import torch

# Dense (no sparsity) bf16/fp16 tensor-core peak FLOP/s from NVIDIA's datasheets, keyed by a substring of
# torch.cuda.get_device_name(). The first key found in the name wins, so the more specific names come first.
PEAK_FLOPS = {
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,       # SXM ("NVIDIA H100 80GB HBM3")
    "H200": 989e12,
    "A100": 312e12,
    "A10G": 70e12,        # AWS's A10 variant (the A10 itself: 125e12)
    "L40S": 362e12,
    "L40": 181e12,
    "L4": 121e12,
    "RTX 4090": 165.2e12,
    "RTX 3090": 71e12,
    "RTX A6000": 154.8e12,
}


def device_peak_flops(device: str | torch.device) -> float | None:
    """The PEAK_FLOPS entry for a CUDA device; None for an unlisted GPU, the CPU or MPS."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_FLOPS.items() if key in name), None)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA, MPS), so that wall-clock timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def matmul_size(seconds_at_smallest: float, n: int, budget: float, smallest: int = 256) -> int:
    """The matrix size to time: the largest power-of-two multiple of `smallest`, up to n, whose one matmul is
    expected (from the smallest one's time, ×8 per doubling) to take at most `budget` seconds."""
    size, expected = smallest, seconds_at_smallest
    while size * 2 <= n and expected * 8 <= budget:
        size, expected = size * 2, expected * 8
    return size


def measure_matmul_peak(dtype: torch.dtype, device: str | torch.device, n: int = 2048,
                        seconds: float = 1.0) -> float:
    """FLOP/s of back-to-back size×size @ size×size matmuls in `dtype` for about `seconds`: 2·size³ FLOPs per matmul
    divided by the wall time. The reference peak where no published figure applies (the CPU). size is n unless a
    matmul of that size would take over a tenth of `seconds` (fp16 on most CPUs: a 2048² fp16 matmul can take
    seconds), so a slow dtype is measured in about `seconds` too."""
    device = torch.device(device)
    a = torch.randn(256, 256, dtype=dtype, device=device)
    a @ a  # warm-up
    synchronize(device)
    t0 = time.perf_counter()
    a @ a
    synchronize(device)
    n = matmul_size(time.perf_counter() - t0, n, seconds / 10)
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    a @ b  # warm-up
    synchronize(device)
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        count += 1
    synchronize(device)
    return 2 * n**3 * count / (time.perf_counter() - t0)


def mfu(tokens_per_second: float, flops_per_token: float, peak: float) -> float:
    """Model FLOPs utilisation: tokens_per_second × flops_per_token / peak (a fraction, not a percentage)."""
    return tokens_per_second * flops_per_token / peak


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> int:
    """Peak bytes: allocated tensors on a CUDA device since `reset_peak_memory`; on the CPU the process's peak
    resident set (tensors, the Python interpreter and libraries: exact per run when one run has the process)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024          # kilobytes on Linux
