"""The one training loop every stage shares.

    for step in steps:                                   one optimiser step = tokens_per_step tokens
        lr = peak · schedule(step)
        N = target units of all micro-batches (all ranks)
        for micro in accumulation:                       DDP all-reduces on the last micro-step only
            loss = Σ unit losses(micro) / N + aux / accumulation;  loss.backward()
        clip the global grad norm;  skip the update if the loss is not finite;  optimiser step
        log · evaluate · sample · checkpoint, each every N steps, and checkpoint on SIGINT/SIGTERM

One host synchronisation per optimiser step: the step's loss and grad norm are read together, for the NaN
guard and the log. Resuming restores weights, optimiser, loader position, step and RNG states, so on the CPU a
resumed run ends bitwise identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import math
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from minimind.errors import MiniMindError
from minimind.fileio import atomic_directory
from minimind.infer import SamplingParams, engine_for
from minimind.lora import apply_lora, load_adapter, save_adapter
from minimind.model.kernels import use_kernels
from minimind.model.transformer import checkpoint_blocks
from minimind.overrides import to_dict
from minimind.perf import device_peak_flops, measure_matmul_peak
from minimind.runtime import keep_freed_memory, resolve_device, resolve_dtype
from minimind.tokenizer import load_tokenizer, tokenizer_dir
from minimind.train import checkpoint, zero
from minimind.train.config import TrainConfig, save_config
from minimind.train.distributed import (
    Dist,
    all_reduce_max,
    cleanup,
    gather_for_saving,
    init_distributed,
    load_optimizer_states,
    shard,
)
from minimind.train.logging import Progress, RunLogger
from minimind.train.optim import build_optimizers
from minimind.train.registry import STAGES, make_stage
from minimind.train.schedule import lr_multiplier, set_lr
from minimind.train.stages import Stage, StageData, token_bytes


def train(config: TrainConfig, resume: bool = False) -> Path:
    """Run `config`; returns the final model directory OUT/model (a LoRA run: the adapter, OUT/adapter)."""
    stage = make_stage(config)
    device = resolve_device(None if config.device == "auto" else config.device)
    if device.type == "cpu":
        keep_freed_memory()
    info = init_distributed(device.type)
    if config.deepspeed.stage and not info.enabled:
        raise MiniMindError("deepspeed.stage shards the training state across processes: launch with torchrun, "
                            "2 or more")
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    try:
        return _train(config, stage, device, info, resume)
    finally:
        cleanup(info)


@dataclass
class Run:
    """What a run holds from its setup to its end: the model (`raw`, and `model` wrapped for compile and DDP),
    its data, optimisers and position, and where it reports."""
    config: TrainConfig
    stage: Stage
    out: Path
    device: torch.device
    info: Dist
    dtype: torch.dtype
    autocast: contextlib.AbstractContextManager
    raw: torch.nn.Module
    model: torch.nn.Module
    tokenizer: object
    data: StageData
    loader: object
    optimizers: list
    scaler: torch.amp.GradScaler
    accumulation: int
    total_steps: int
    step: int
    tokens_seen: int
    resumed: bool
    logger: RunLogger
    progress: Progress
    evaluation: list
    byte_counts: torch.Tensor
    flops_per_token: int
    peak: float | None
    engine: object = None                # the DeepSpeed engine (deepspeed.stage > 0), which `model` is


def _train(config: TrainConfig, stage: Stage, device: torch.device, info: Dist, resume: bool) -> Path:
    run = _setup(config, stage, device, info, resume)
    interrupted = _loop(run)
    return _finish(run, interrupted)


def _setup(config: TrainConfig, stage: Stage, device: torch.device, info: Dist, resume: bool) -> Run:
    """Model (resumed, fresh or with adapters; kernels chosen), tokenizer, data, optimisers, restored state, wrappers
    (activation checkpointing, compile, DDP; FSDP2 shards in place), logger; the step-0 evaluation of a fresh run."""
    out = Path(config.out)
    dtype = _dtype(config.dtype, device)
    torch.manual_seed(config.seed)

    resumed = checkpoint.load_latest(out, move_damaged=info.main) if resume else None
    lora = STAGES[config.stage].adapters          # the checkpoint then holds the adapter; the base is config.model
    source = str(resumed[0]) if resumed and not lora else config.model
    model = use_kernels(stage.build_model(source, device), config.kernels)
    tokenizer_path = tokenizer_dir(source)
    if lora and resumed:
        load_adapter(model, resumed[0])
    elif lora:
        apply_lora(model, config.lora)
    model.train()
    tokenizer = load_tokenizer(tokenizer_path)
    if stage.language_model and tokenizer.vocab_size > model.config.vocab_size:
        raise MiniMindError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
                            f"{model.config.vocab_size}")
    if stage.language_model and config.data.seq_len > model.config.max_position_embeddings:
        raise MiniMindError(f"config key 'data.seq_len' ({config.data.seq_len}) exceeds the model's "
                            f"max_position_embeddings ({model.config.max_position_embeddings})")
    if resumed is not None:
        _check_resumable(resumed[2]["config"], config)
    if info.main:
        if out.exists() and not out.is_dir():
            raise MiniMindError(f"config key 'out': {out} exists and is not a directory")
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
        if resumed is None:
            checkpoint.clear(out)                 # a fresh run: an earlier run's checkpoints must not be resumed
    data = stage.build(config, tokenizer_path, info.main, lambda: dist.barrier() if info.enabled else None)
    autocast = (torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext())
    stage.setup(model, data, config, device, autocast)

    seq, batch = config.data.seq_len, config.batch_size
    micro_tokens = batch * seq * info.world_size
    accumulation = max(1, round(config.tokens_per_step / micro_tokens)) if config.tokens_per_step else 1
    loader = stage.loader(model, tokenizer, data, config, info, device)
    total_steps = config.max_steps or max(1, math.floor(config.epochs * loader.steps_per_epoch / accumulation))
    if config.optim.warmup_steps >= total_steps and info.main:
        o = config.optim
        last = o.lr * lr_multiplier(total_steps - 1, total_steps, o.warmup_steps, o.decay, o.min_lr_ratio)
        print(f"notice: optim.warmup_steps ({o.warmup_steps}) ≥ the run's {total_steps} steps: the warmup takes the "
              f"whole run and the learning rate ends at {last:.3g}, not decaying from its peak {o.lr:g}",
              file=sys.stderr)
    if config.fsdp:
        if not info.enabled:
            raise MiniMindError("fsdp=true shards the model across processes: launch with torchrun, 2 or more")
        shard(model)
    optimizers = build_optimizers(model, config.optim, device.type)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    step, tokens_seen = 0, 0
    if resumed is not None:
        _, state, trainer_info = resumed
        if config.fsdp:
            load_optimizer_states(model, optimizers, state["optimizers"])
        elif not config.deepspeed.stage:          # DeepSpeed's shards are restored with its engine, below
            for optimizer, saved in zip(optimizers, state["optimizers"], strict=True):
                optimizer.load_state_dict(saved)
        scaler.load_state_dict(state["scaler"])
        checkpoint.set_rng_states(state["rng"])
        step, tokens_seen = trainer_info["step"], trainer_info["tokens_seen"]
        if step > total_steps:
            raise MiniMindError(f"the checkpoint is at step {step}, past this run's {total_steps} steps "
                                "(raise max_steps or epochs to continue it)")
        loader.load_state_dict(_loader_state(trainer_info, info.world_size, loader.steps_per_epoch))

    raw = model
    if config.activation_checkpointing:
        layers = model.config.num_hidden_layers
        chosen = (config.checkpoint_layers or
                  (range(0, layers, config.checkpoint_every) if config.checkpoint_every else range(layers)))
        outside = sorted(set(chosen) - set(range(layers)))
        if outside:
            raise MiniMindError(f"config key 'checkpoint_layers': the model has layers 0–{layers - 1}, not {outside}")
        checkpoint_blocks(model, chosen)
    if config.compile:
        model = torch.compile(model)
    engine = None
    if config.deepspeed.stage:
        model, wrapped = zero.wrap(model, optimizers, config.deepspeed, batch, accumulation, config.optim.grad_clip,
                                   dtype)
        engine, optimizers = model, [wrapped]
        if resumed is not None:
            zero.load_states(engine, resumed[0].parent / zero.FOLDER)
    elif info.enabled and not config.fsdp:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    logger = RunLogger(out, config.logger, config=to_dict(config), enabled=info.main)
    logger.truncate_after(step if resumed is not None else -1)     # a fresh run starts a fresh log
    if info.main:
        _truncate_samples(out / "samples.jsonl", step if resumed is not None else -1)
    run = Run(config=config, stage=stage, out=out, device=device, info=info, dtype=dtype, autocast=autocast, raw=raw,
              model=model, tokenizer=tokenizer, data=data, loader=loader, optimizers=optimizers, scaler=scaler,
              accumulation=accumulation, total_steps=total_steps, step=step, tokens_seen=tokens_seen,
              resumed=resumed is not None, logger=logger,
              progress=Progress(total_steps, initial_step=step, enabled=info.main),
              evaluation=stage.validation(data, config, device), byte_counts=token_bytes(tokenizer).to(device),
              flops_per_token=stage.flops_per_token(raw, seq),
              peak=device_peak_flops(device) or (_measured_peak(dtype, device.type) if info.main else None),
              engine=engine)
    if info.main:
        run.progress.write(f"{config.stage}: {raw.num_params() / 1e6:.2f}M parameters · {total_steps} steps of "
                           f"{accumulation}×{micro_tokens:,} tokens · {device} {str(dtype).removeprefix('torch.')} · "
                           f"{len(data.rows):,} rows of {seq}")
    if run.evaluation and not run.resumed:             # the "before" figure, at step 0
        _evaluate(run, write=False)
    return run


def _loop(run: Run) -> bool:
    """Optimiser steps until the last; after each, what falls due (log, evaluation, samples, checkpoint).
    Returns whether a signal stopped the run (a checkpoint is then saved)."""
    config, info = run.config, run.info
    stop, interrupted = _StopFlag(), False
    bad_steps, window_start, window_tokens = 0, time.perf_counter(), 0
    gc.collect()
    gc.freeze()                      # the objects so far live for the whole run: spare the GC rescanning them
    try:
        while run.step < run.total_steps:
            multiplier = lr_multiplier(run.step, run.total_steps, config.optim.warmup_steps, config.optim.decay,
                                       config.optim.min_lr_ratio)
            set_lr(run.optimizers, multiplier)
            loss_value, norm_value, metrics, step_tokens = _optimizer_step(run)
            run.step += 1
            run.tokens_seen += step_tokens
            if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
                bad_steps += 1
                run.progress.write(f"step {run.step - 1}: loss {loss_value}, grad norm {norm_value}; update skipped "
                                   f"({bad_steps} in a row)")
                if bad_steps >= config.max_bad_steps:
                    raise MiniMindError(f"{bad_steps} consecutive non-finite losses at step {run.step - 1}; "
                                        "stopping (lower optim.lr, or check the data)")
                continue
            bad_steps = 0
            window_tokens += step_tokens

            last = run.step == run.total_steps
            if run.step % config.log_every == 0 or last:
                tokens_per_s = window_tokens / max(time.perf_counter() - window_start, 1e-9)
                mfu = tokens_per_s * run.flops_per_token / run.peak if run.peak else None
                lr = config.optim.lr * multiplier
                logged = {"loss": loss_value, "lr": lr, "grad_norm": norm_value, "tokens": run.tokens_seen,
                          "tokens_per_s": tokens_per_s} | ({"mfu": mfu} if mfu is not None else {})
                run.logger.log(run.step, logged | metrics | run.stage.step_log())
                run.progress.update(run.step, loss_value, lr, tokens_per_s, mfu)
                window_start, window_tokens = time.perf_counter(), 0
            if run.evaluation and ((config.eval_every and run.step % config.eval_every == 0) or last):
                _evaluate(run, write=True)
            if run.stage.generative and (info.main or config.fsdp) and \
                    ((config.sample_every and run.step % config.sample_every == 0) or last):
                _samples(run.stage.policy(run.raw), run.tokenizer, config, run.progress, run.out, run.step,
                         write=info.main)
            interrupted = (stop.agreed(run.device, info) if (not info.enabled or run.step % config.log_every == 0)
                           else False)
            if last or interrupted or (config.save_every and run.step % config.save_every == 0):
                _save(run)
            if interrupted:
                break
    finally:
        gc.unfreeze()
        stop.restore()
        run.progress.close()
        run.logger.close()
    return interrupted


def _optimizer_step(run: Run) -> tuple[float, float, dict, int]:
    """One optimiser step over `accumulation` micro-batches (`_micro_batches`). The update is skipped when the loss
    or the gradient norm is not finite. → (loss, grad norm, the stage's metrics, tokens), read in one host sync."""
    config, device = run.config, run.device
    if run.engine is not None:
        return _deepspeed_step(run)
    ddp = isinstance(run.model, DistributedDataParallel)

    def backward(loss: torch.Tensor, last: bool) -> None:
        run.scaler.scale(loss).backward()

    def gradient_sync(last: bool):
        if config.fsdp:
            run.raw.set_requires_gradient_sync(last)
        return run.model.no_sync() if ddp and not last else contextlib.nullcontext()

    loss_sum, metric_sums, step_tokens = _micro_batches(run, backward, gradient_sync)
    for optimizer in run.optimizers:
        run.scaler.unscale_(optimizer)
    grad_norm = (torch.nn.utils.clip_grad_norm_(run.raw.parameters(), config.optim.grad_clip)
                 if config.optim.grad_clip > 0 else torch.zeros((), device=device))
    if isinstance(grad_norm, DTensor):              # FSDP2: the norm of the sharded gradients
        grad_norm = grad_norm.full_tensor()
    loss_value, norm_value, *metric_values = torch.stack(
        [loss_sum, grad_norm.float(), *metric_sums.values()]).tolist()            # the one sync
    if math.isfinite(loss_value) and math.isfinite(norm_value):
        for optimizer in run.optimizers:
            run.scaler.step(optimizer)
    run.scaler.update()
    for optimizer in run.optimizers:
        optimizer.zero_grad(set_to_none=True)
    return loss_value, norm_value, dict(zip(metric_sums, metric_values, strict=True)), step_tokens


def _micro_batches(run: Run, backward, gradient_sync=lambda last: contextlib.nullcontext()):
    """The step's micro-batches, each forward inside `gradient_sync(last)` and then `backward(loss, last)`: the loss
    of each is its stage's sum over units divided by the step's units (all ranks), so the gradient is the one big
    batch's. → (the step's mean loss on this rank, its metric sums, tokens of all ranks), still on the device."""
    info, stage = run.info, run.stage
    batches = [next(run.loader) for _ in range(run.accumulation)]
    count = torch.stack([stage.count(b) for b in batches]).sum().float()
    local_count = count.clone()
    if info.enabled:
        dist.all_reduce(count)               # units of the whole step, on the device: no host sync
    loss_sum, metric_sums = torch.zeros((), device=run.device), {}
    for micro, batch_data in enumerate(batches):
        last = micro == run.accumulation - 1
        with gradient_sync(last):
            with run.autocast:
                total, aux, metrics = stage.loss(run.model, batch_data)
            # DDP and DeepSpeed average gradients over ranks; × world_size turns that back into a sum
            backward(total / count.clamp(min=1) * info.world_size + aux / run.accumulation, last)
        loss_sum += total.detach() / local_count.clamp(min=1) + aux.detach() / run.accumulation
        for name, value in metrics.items():
            metric_sums[name] = metric_sums.get(name, 0) + value.float() / local_count.clamp(min=1)
    return loss_sum, metric_sums, sum(stage.tokens(b) for b in batches) * info.world_size


def _deepspeed_step(run: Run) -> tuple[float, float, dict, int]:
    """`_optimizer_step` under DeepSpeed: `engine.backward` for each micro-batch and `engine.step()` after it
    (DeepSpeed updates at the accumulation boundary, clipping first). DeepSpeed cannot skip an update, so a
    non-finite loss stops the run at once instead of after max_bad_steps."""
    engine = run.engine

    def backward(loss: torch.Tensor, last: bool) -> None:
        engine.backward(loss, scale_wrt_gas=False)
        if not last:
            engine.step()                                   # counts the micro-step; no update yet

    loss_sum, metric_sums, step_tokens = _micro_batches(run, backward)
    loss_value, *metric_values = torch.stack([loss_sum, *metric_sums.values()]).tolist()
    finite = all_reduce_max(torch.tensor(float(not math.isfinite(loss_value))), run.info).item() == 0
    if not finite:
        raise MiniMindError(f"non-finite loss at step {run.step} under DeepSpeed, which cannot skip an update; "
                            "stopping (resume from the last checkpoint with a lower optim.lr, or check the data)")
    engine.step()                                           # the boundary: clip, update, zero the gradients
    norm = engine.get_global_grad_norm()
    norm_value = float(norm) if norm is not None else 0.0
    return loss_value, norm_value, dict(zip(metric_sums, metric_values, strict=True)), step_tokens


def _evaluate(run: Run, write: bool) -> None:
    """The stage's validation figures at this step, logged (and printed when `write`)."""
    run.raw.eval()
    with run.autocast:
        result = run.stage.evaluate(run.raw, run.evaluation, run.byte_counts)
    run.raw.train()
    run.logger.log(run.step, result, kind="val")
    if write:
        run.progress.write(f"step {run.step}: " + " · ".join(f"val {k} {v:.4f}" if isinstance(v, float) else
                                                             f"val {k} {v}" for k, v in result.items()))


def _finish(run: Run, interrupted: bool) -> Path:
    """The final model directory (or adapter) of a completed run, written by rank 0."""
    if interrupted:
        raise KeyboardInterrupt(f"interrupted at step {run.step}; the checkpoint is saved, continue with --resume")
    spec = STAGES[run.config.stage]
    final = run.out / ("adapter" if spec.adapters else "model")
    if run.step == run.total_steps:
        plain = (gather_for_saving(run.raw, [])[0] if run.config.fsdp else zero.full_model(run.engine)
                 if run.engine is not None else run.raw)
        if run.info.main and spec.adapters:
            save_adapter(plain, final, base=run.config.model)
        elif run.info.main:
            with atomic_directory(final, marker="config.json") as tmp:
                plain.save(tmp, tokenizer=run.tokenizer)
    if run.info.enabled:
        dist.barrier()
    return final


def _save(run: Run) -> None:
    """Checkpoint: rank 0 writes (under DDP every rank holds the same model and optimiser states; under FSDP2
    they are gathered to rank 0 first)."""
    raw, config, info = run.raw, run.config, run.info
    extra = {}
    if config.fsdp:
        raw, optimizer_states = gather_for_saving(raw, run.optimizers)
    elif run.engine is not None:          # each rank's shard, staged beside the checkpoint, moved in by rank 0
        staging = checkpoint.staging(run.out, run.step)
        if info.main:
            shutil.rmtree(staging, ignore_errors=True)      # a crashed save's leftovers
        dist.barrier()
        zero.save_states(run.engine, staging)
        raw, optimizer_states, extra = zero.full_model(run.engine), [], {zero.FOLDER: staging}
    else:
        optimizer_states = [o.state_dict() for o in run.optimizers]
    if info.main:
        state = {"optimizers": optimizer_states, "scaler": run.scaler.state_dict(), "rng": checkpoint.rng_states()}
        trainer = {"step": run.step, "tokens_seen": run.tokens_seen, "loader": run.loader.state_dict(),
                   "world_size": info.world_size, "config": to_dict(config)}
        checkpoint.save_checkpoint(run.out, run.step, raw, run.tokenizer, state, trainer, config.keep_last, extra)
    if info.enabled:
        dist.barrier()


def _check_resumable(saved: dict, config: TrainConfig) -> None:
    """Settings whose change a checkpoint cannot follow."""
    if saved["optim"]["optimizer"] != config.optim.optimizer:
        raise MiniMindError(f"the checkpoint was trained with optim.optimizer={saved['optim']['optimizer']}; "
                            f"it cannot resume with {config.optim.optimizer}")


def _truncate_samples(path: Path, step: int) -> None:
    if path.is_file():
        kept = [line for line in path.read_text().splitlines(keepends=True) if json.loads(line)["step"] <= step]
        path.write_text("".join(kept))


def _loader_state(trainer: dict, world_size: int, steps_per_epoch: int) -> dict:
    """The saved loader position, re-expressed for this world size: global batches consumed are kept."""
    state = dict(trainer["loader"])
    if state["world_size"] != world_size:
        step = state["step"] * state["world_size"] // world_size
        state["epoch"] += step // steps_per_epoch
        state["step"] = step % steps_per_epoch
        state["world_size"] = world_size
    return state


def sample(model, tokenizer, prompt: str, chat: bool, max_new_tokens: int = 48) -> str:
    """Greedy continuation of `prompt` (raw text, or one user turn rendered with the chat template)."""
    engine = engine_for(model, tokenizer)
    ids = (engine.chat_prompt([{"role": "user", "content": prompt}]) if chat
           else [tokenizer.bos_id, *tokenizer.encode(prompt)])
    return engine.generate([ids], SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0))[0][0].text


def _samples(model, tokenizer, config, progress, out: Path, step: int, write: bool) -> None:
    """Print the sample prompts' continuations and append them to OUT/samples.jsonl (if `write`: under FSDP2
    every rank generates, since each forward gathers parameters from all of them)."""
    model.eval()
    for prompt in config.samples:
        text = sample(model, tokenizer, prompt, chat=STAGES[config.stage].chat)
        if write:
            progress.write(f"  {prompt!r} → {text!r}")
            with open(out / "samples.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": step, "prompt": prompt, "output": text}, ensure_ascii=False) + "\n")
    model.train()


@functools.cache
def _measured_peak(dtype: torch.dtype, device_type: str) -> float | None:
    """The MFU reference where no published peak applies (the CPU): a large matmul's rate, measured once. None for
    fp16 on the CPU, which has no fp16 matmul units: its rate depends on the shape so much (a tiny model measured
    over 200% of a 256² matmul's) that no MFU would mean anything; the run says so and logs none."""
    if dtype == torch.float16 and device_type == "cpu":
        print("notice: dtype=fp16 on the CPU: no fp16 matmul hardware (slow, and no MFU is reported); bf16 or fp32 "
              "train faster here", file=sys.stderr)
        return None
    return measure_matmul_peak(dtype, device_type, seconds=0.5)


def _dtype(name: str, device: torch.device) -> torch.dtype:
    if name != "auto":
        return resolve_dtype(name)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop checkpoints and stops at the end of the current step."""

    def __init__(self):
        self.raised = False
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum, frame):
        self.raised = True

    def agreed(self, device, info: Dist) -> bool:
        """True when any rank was signalled (an all-reduce under DDP, so that every rank stops together)."""
        if not info.enabled:
            return self.raised
        return bool(all_reduce_max(torch.tensor(float(self.raised), device=device), info).item())

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
