"""DeepSpeed ZeRO as a launcher strategy of the one trainer, beside DDP and FSDP2 (`deepspeed.stage: 1 | 2 | 3`).

    ZeRO-1  each rank keeps 1/N of the optimiser states          (AdamW: 8 bytes per parameter in fp32 → 8/N)
    ZeRO-2  … and reduces gradients to their owner (1/N of them)
    ZeRO-3  … and holds 1/N of the parameters, gathered layer by layer for forward and backward
    offload_optimizer (ZeRO-Offload): the optimiser states and step live in CPU memory; offload_params (ZeRO-3):
    the parameters too

The trainer keeps its loop: its AdamW (the "client optimiser", so nothing has to be compiled), its schedule (the
learning rate is written into the wrapped optimiser's groups), its loss normalisation (the step's units over all
ranks; DeepSpeed averages gradients over ranks as DDP does, and `backward(scale_wrt_gas=False)` leaves the
accumulation to the loss), its clipping value and its data. DeepSpeed owns the micro-step count: `step()` after
every micro-batch, which updates only at the accumulation boundary. Checkpoints: the model directory as always
(ZeRO-3 gathers the full weights to rank 0 first), and beside it `deepspeed/`, each rank's optimiser shard written
by DeepSpeed's own `save_checkpoint`, so a run resumes exactly at the same world size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from minimind.errors import MiniMindError

FOLDER, TAG = "deepspeed", "zero"            # OUT/checkpoints/step-N/deepspeed/zero/…


@dataclass
class DeepSpeedConfig:
    stage: int = 0                       # ZeRO stage 1, 2 or 3 (under torchrun); 0 = off (DDP, or fsdp=true)
    offload_optimizer: bool = False      # optimiser states and step in CPU memory (ZeRO-Offload)
    offload_params: bool = False         # ZeRO-3 only: parameters in CPU memory too (ZeRO-Infinity's CPU tier)

    def validate(self) -> None:
        if self.stage not in (0, 1, 2, 3):
            raise MiniMindError(f"config key 'deepspeed.stage' must be 0 (off), 1, 2 or 3; got {self.stage!r}")
        if self.offload_params and self.stage != 3:
            raise MiniMindError("config key 'deepspeed.offload_params' needs deepspeed.stage=3 (only ZeRO-3 "
                                "partitions the parameters)")
        if (self.offload_optimizer or self.offload_params) and not self.stage:
            raise MiniMindError("config keys 'deepspeed.offload_*' need deepspeed.stage 1–3")


def ds_config(settings: DeepSpeedConfig, micro_batch: int, accumulation: int, grad_clip: float,
              dtype: torch.dtype) -> dict:
    """The DeepSpeed JSON config of a run: ZeRO stage and offload, micro-batch and accumulation, clipping; bf16
    as DeepSpeed's own mixed precision when the run trains in bf16 (fp16 runs use the trainer's scaler instead,
    and are refused: DeepSpeed's fp16 needs its loss scaler in charge)."""
    zero: dict = {"stage": settings.stage}
    if settings.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    if settings.offload_params:
        zero["offload_param"] = {"device": "cpu"}
    return {"train_micro_batch_size_per_gpu": micro_batch, "gradient_accumulation_steps": accumulation,
            "gradient_clipping": grad_clip, "zero_optimization": zero,
            "bf16": {"enabled": dtype == torch.bfloat16}, "fp16": {"enabled": False},
            "zero_allow_untested_optimizer": True, "steps_per_print": 2**31 - 1, "wall_clock_breakdown": False}


def wrap(model: torch.nn.Module, optimizers: list, settings: DeepSpeedConfig, micro_batch: int, accumulation: int,
         grad_clip: float, dtype: torch.dtype):
    """(engine, its optimiser): the model under DeepSpeed with the trainer's AdamW as the client optimiser."""
    try:
        import deepspeed
    except ImportError:
        raise MiniMindError("deepspeed.stage needs DeepSpeed: DS_BUILD_OPS=0 pip install --no-build-isolation "
                            "deepspeed (docs/training.md)") from None
    if len(optimizers) != 1:
        raise MiniMindError("deepspeed.stage runs one optimiser (AdamW); optim.optimizer=muon has two")
    if dtype == torch.float16:
        raise MiniMindError("deepspeed.stage with dtype=fp16 is not supported (use bf16 or fp32)")
    engine, optimizer, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizers[0],
        config=ds_config(settings, micro_batch, accumulation, grad_clip, dtype))
    return engine, optimizer


def init(device_type: str) -> None:
    """Join the process group through DeepSpeed (gloo on the CPU, NCCL on CUDA), before anything else uses it."""
    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl" if device_type == "cuda" else "gloo")


def full_model(engine) -> torch.nn.Module | None:
    """A plain CPU copy of the trained model with full fp32 weights on rank 0 (ZeRO-3: gathered from every rank,
    a collective every rank must join), None on the others."""
    import torch.distributed as dist

    from minimind.train.distributed import empty_copy

    if engine.zero_optimization_partition_weights():
        state = engine._zero3_consolidated_16bit_state_dict()
    else:
        state = engine.module.state_dict()
    if dist.get_rank() != 0:
        return None
    plain = empty_copy(engine.module)
    missing, _ = plain.load_state_dict({k: v.detach().to("cpu", torch.float32) for k, v in state.items()},
                                       strict=False, assign=True)
    if set(missing) - {"lm_head.weight"}:                  # a tied head may come back once, under either name
        raise MiniMindError(f"DeepSpeed returned no weights for {sorted(missing)[:3]}")
    plain.tie_weights()
    return plain


def save_states(engine, folder: Path) -> None:
    """Each rank writes its optimiser (and, for ZeRO-3, parameter) shard under `folder` (a collective)."""
    engine.save_checkpoint(str(folder), tag=TAG, save_latest=False)


def load_states(engine, folder: Path) -> None:
    """Restore what `save_states` wrote; the world size must be the one that wrote it."""
    path, _ = engine.load_checkpoint(str(folder), tag=TAG, load_module_strict=True, load_optimizer_states=True,
                                     load_lr_scheduler_states=False)
    if path is None:
        raise MiniMindError(f"{folder}: no DeepSpeed states to resume from (written by another strategy or world "
                            "size?)")
