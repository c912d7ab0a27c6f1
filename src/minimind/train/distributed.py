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


# ---- FSDP2: parameters sharded across ranks --------------------------------------------------------------------

def shard(model) -> None:
    """FSDP2: each block, then the root (embeddings, final norm, head), owns 1/world of its parameters."""
    from torch.distributed.fsdp import fully_shard

    for block in model.model.layers:
        fully_shard(block)
    fully_shard(model)


def gather_for_saving(model, optimizers: list) -> tuple:
    """(a plain CPU copy of the model with full weights, full optimiser states) on rank 0, (None, None) on the
    others. Every rank must call it (the gathers are collectives)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=options)
    states = [get_optimizer_state_dict(model, optimizer, options=options) for optimizer in optimizers]
    if dist.get_rank() != 0:
        return None, None
    plain = empty_copy(model)
    plain.load_state_dict(weights, assign=True)
    plain.tie_weights()
    return plain, states


def empty_copy(model):
    """A model of `model`'s class, config and kernels with its tensors on the meta device: for full weights
    gathered from the ranks to be assigned into."""
    from minimind.model import Transformer
    from minimind.model.kernels import kernels_of, use_kernels
    from minimind.model.vlm import VisionLanguageModel

    with torch.device("meta"):
        plain = VisionLanguageModel(model.config, model.vision) if hasattr(model, "vision") else \
            Transformer(model.config)
    return use_kernels(plain, kernels_of(model))


def load_optimizer_states(model, optimizers: list, states: list[dict]) -> None:
    """Full optimiser states (as gather_for_saving returns them) → each rank's shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    for optimizer, state in zip(optimizers, states, strict=True):
        set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
