"""Process group set-up for `torchrun`: DDP over gloo (CPU) or NCCL (CUDA); a single process needs none."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> Dist:
    """Join the process group torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK (if any)."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return Dist()
    backend = "nccl" if device_type == "cuda" else "gloo"
    info = Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")))
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return info


def all_reduce_max(value: torch.Tensor, info: Dist) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return value


def cleanup(info: Dist) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
