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
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from minimind.errors import MiniMindError
from minimind.fileio import atomic_directory
from minimind.infer import Engine, SamplingParams
from minimind.lora import apply_lora, load_adapter, save_adapter
from minimind.model.transformer import checkpoint_blocks
from minimind.overrides import to_dict
from minimind.perf import device_peak_flops, measure_matmul_peak
from minimind.runtime import keep_freed_memory, resolve_device
from minimind.tokenizer import load_tokenizer, tokenizer_dir
from minimind.train import checkpoint
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
from minimind.train.registry import STAGES
from minimind.train.schedule import lr_multiplier, set_lr
from minimind.train.stages import token_bytes

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def train(config: TrainConfig, resume: bool = False) -> Path:
    """Run `config`; returns the final model directory OUT/model (a LoRA run: the adapter, OUT/adapter)."""
    stage = STAGES[config.stage](config)
    device = resolve_device(None if config.device == "auto" else config.device)
    if device.type == "cpu":
        keep_freed_memory()
    info = init_distributed(device.type)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    try:
        return _train(config, stage, device, info, resume)
    finally:
        cleanup(info)


def _train(config: TrainConfig, stage, device: torch.device, info: Dist, resume: bool) -> Path:
    out = Path(config.out)
    dtype = _dtype(config.dtype, device)
    torch.manual_seed(config.seed)

    # ---- model, tokenizer, data ------------------------------------------------------------------------------
    resumed = checkpoint.load_latest(out) if resume else None
    lora = config.stage == "lora"                 # the checkpoint then holds the adapter; the base is config.model
    source = str(resumed[0]) if resumed and not lora else config.model
    model = stage.build_model(source, device)
    tokenizer_path = tokenizer_dir(source)
    if lora and resumed:
        load_adapter(model, resumed[0])
    elif lora:
        apply_lora(model, config.lora)
    model.train()
    tokenizer = load_tokenizer(tokenizer_path)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise MiniMindError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
                            f"{model.config.vocab_size}")
    if config.data.seq_len > model.config.max_position_embeddings:
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
    if config.fsdp:
        if not info.enabled:
            raise MiniMindError("fsdp=true shards the model across processes: launch with torchrun, 2 or more")
        shard(model)
    optimizers = build_optimizers(model, config.optim, device.type)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    step, tokens_seen, trainer_info = 0, 0, {}
    if resumed is not None:
        _, state, trainer_info = resumed
        if config.fsdp:
            load_optimizer_states(model, optimizers, state["optimizers"])
        else:
            for optimizer, saved in zip(optimizers, state["optimizers"], strict=True):
                optimizer.load_state_dict(saved)
        scaler.load_state_dict(state["scaler"])
        checkpoint.set_rng_states(state["rng"])
        step, tokens_seen = trainer_info["step"], trainer_info["tokens_seen"]
        if step > total_steps:
            raise MiniMindError(f"the checkpoint is at step {step}, past this run's {total_steps} steps "
                                "(raise max_steps or epochs to continue it)")
        loader.load_state_dict(_loader_state(trainer_info, info.world_size, loader.steps_per_epoch))

    # ---- wrappers: activation checkpointing, compile, DDP (FSDP2 shards in place, above) -------------------
    raw = model
    if config.activation_checkpointing:
        checkpoint_blocks(model)
    if config.compile:
        model = torch.compile(model)
    ddp = info.enabled and not config.fsdp
    if ddp:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    logger = RunLogger(out, config.logger, config=to_dict(config), enabled=info.main)
    logger.truncate_after(step if resumed is not None else -1)     # a fresh run starts a fresh log
    if info.main:
        _truncate_samples(out / "samples.jsonl", step if resumed is not None else -1)
    progress = Progress(total_steps, initial_step=step, enabled=info.main)
    peak = device_peak_flops(device) or (_measured_peak(dtype, device.type) if info.main else None)
    flops_per_token = stage.flops_per_token(raw, seq)
    evaluation = stage.validation(data, config, device)
    byte_counts = token_bytes(tokenizer).to(device)
    if info.main:
        progress.write(f"{config.stage}: {raw.num_params() / 1e6:.2f}M parameters · {total_steps} steps of "
                       f"{accumulation}×{micro_tokens:,} tokens · {device} {str(dtype).removeprefix('torch.')} · "
                       f"{len(data.rows):,} rows of {seq}")

    if evaluation and resumed is None:                 # the "before" figure, at step 0
        raw.eval()
        with autocast:
            logger.log(0, stage.evaluate(raw, evaluation, byte_counts), kind="val")
        raw.train()

    stop, interrupted = _StopFlag(), False
    bad_steps, window_start, window_tokens = 0, time.perf_counter(), 0
    gc.collect()
    gc.freeze()                      # the objects so far live for the whole run: spare the GC rescanning them
    try:
        while step < total_steps:
            multiplier = lr_multiplier(step, total_steps, config.optim.warmup_steps, config.optim.decay,
                                       config.optim.min_lr_ratio)
            set_lr(optimizers, multiplier)
            batches = [next(loader) for _ in range(accumulation)]
            count = torch.stack([stage.count(b) for b in batches]).sum().float()
            local_count = count.clone()
            if info.enabled:
                dist.all_reduce(count)               # units of the whole step, on the device: no host sync
            loss_sum, metric_sums = torch.zeros((), device=device), {}
            for micro, batch_data in enumerate(batches):
                sync = micro == accumulation - 1
                if config.fsdp:
                    raw.set_requires_gradient_sync(sync)
                no_sync = model.no_sync() if ddp and not sync else contextlib.nullcontext()
                with no_sync:
                    with autocast:
                        total, aux, metrics = stage.loss(model, batch_data)
                    # DDP averages gradients over ranks; × world_size turns that back into a sum
                    loss = total / count.clamp(min=1) * info.world_size + aux / accumulation
                    scaler.scale(loss).backward()
                loss_sum += total.detach() / local_count.clamp(min=1) + aux.detach() / accumulation
                for name, value in metrics.items():
                    metric_sums[name] = metric_sums.get(name, 0) + value.float() / local_count.clamp(min=1)
            for optimizer in optimizers:
                scaler.unscale_(optimizer)
            grad_norm = (torch.nn.utils.clip_grad_norm_(raw.parameters(), config.optim.grad_clip)
                         if config.optim.grad_clip > 0 else torch.zeros((), device=device))
            if isinstance(grad_norm, DTensor):              # FSDP2: the norm of the sharded gradients
                grad_norm = grad_norm.full_tensor()
            loss_value, norm_value, *metric_values = torch.stack(
                [loss_sum, grad_norm.float(), *metric_sums.values()]).tolist()            # the one sync
            step_tokens = sum(stage.tokens(b) for b in batches) * info.world_size
            if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
                bad_steps += 1
                for optimizer in optimizers:
                    optimizer.zero_grad(set_to_none=True)
                scaler.update()
                progress.write(f"step {step}: loss {loss_value}, grad norm {norm_value}; update skipped "
                               f"({bad_steps} in a row)")
                if bad_steps >= config.max_bad_steps:
                    raise MiniMindError(f"{bad_steps} consecutive non-finite losses at step {step}; stopping "
                                        "(lower optim.lr, or check the data)")
                step += 1
                tokens_seen += step_tokens
                continue
            bad_steps = 0
            for optimizer in optimizers:
                scaler.step(optimizer)
            scaler.update()
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens_seen += step_tokens
            window_tokens += step_tokens

            last = step == total_steps
            if step % config.log_every == 0 or last:
                elapsed = time.perf_counter() - window_start
                tokens_per_s = window_tokens / max(elapsed, 1e-9)
                mfu = tokens_per_s * flops_per_token / peak if peak else None
                lr = config.optim.lr * multiplier
                metrics = {"loss": loss_value, "lr": lr, "grad_norm": norm_value, "tokens": tokens_seen,
                           "tokens_per_s": tokens_per_s} | ({"mfu": mfu} if mfu is not None else {})
                metrics |= dict(zip(metric_sums, metric_values, strict=True)) | stage.step_log()
                logger.log(step, metrics)
                progress.update(step, loss_value, lr, tokens_per_s, mfu)
                window_start, window_tokens = time.perf_counter(), 0
            if evaluation and ((config.eval_every and step % config.eval_every == 0) or last):
                raw.eval()
                with autocast:
                    result = stage.evaluate(raw, evaluation, byte_counts)
                raw.train()
                logger.log(step, result, kind="val")
                progress.write(f"step {step}: " + " · ".join(f"val {k} {v:.4f}" if isinstance(v, float) else
                                                             f"val {k} {v}" for k, v in result.items()))
            if stage.generative and (info.main or config.fsdp) and \
                    ((config.sample_every and step % config.sample_every == 0) or last):
                _samples(stage.policy(raw), tokenizer, config, progress, out, step, write=info.main)
            interrupted = stop.agreed(device, info) if (not info.enabled or step % config.log_every == 0) else False
            if last or interrupted or (config.save_every and step % config.save_every == 0):
                _save(out, step, raw, tokenizer, optimizers, scaler, loader, tokens_seen, config, info)
            if interrupted:
                break
    finally:
        gc.unfreeze()
        stop.restore()
        progress.close()
        logger.close()
    if interrupted:
        raise KeyboardInterrupt(f"interrupted at step {step}; the checkpoint is saved, continue with --resume")
    final = out / ("adapter" if lora else "model")
    if step == total_steps:
        plain = gather_for_saving(raw, [])[0] if config.fsdp else raw
        if info.main and lora:
            save_adapter(plain, final, base=config.model)
        elif info.main:
            with atomic_directory(final, marker="config.json") as tmp:
                plain.save(tmp, tokenizer=tokenizer)
    if info.enabled:
        dist.barrier()
    return final


def _save(out, step, raw, tokenizer, optimizers, scaler, loader, tokens_seen, config, info: Dist) -> None:
    """Checkpoint: rank 0 writes (under DDP every rank holds the same model and optimiser states; under FSDP2
    they are gathered to rank 0 first)."""
    if config.fsdp:
        raw, optimizer_states = gather_for_saving(raw, optimizers)
    else:
        optimizer_states = [o.state_dict() for o in optimizers]
    if info.main:
        state = {"optimizers": optimizer_states, "scaler": scaler.state_dict(), "rng": checkpoint.rng_states()}
        trainer = {"step": step, "tokens_seen": tokens_seen, "loader": loader.state_dict(),
                   "world_size": info.world_size, "config": to_dict(config)}
        checkpoint.save_checkpoint(out, step, raw, tokenizer, state, trainer, config.keep_last)
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
    engine = Engine(model, tokenizer)
    ids = (engine.chat_prompt([{"role": "user", "content": prompt}]) if chat
           else [tokenizer.bos_id, *tokenizer.encode(prompt)])
    return engine.generate([ids], SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0))[0][0].text


def _samples(model, tokenizer, config, progress, out: Path, step: int, write: bool) -> None:
    """Print the sample prompts' continuations and append them to OUT/samples.jsonl (if `write`: under FSDP2
    every rank generates, since each forward gathers parameters from all of them)."""
    model.eval()
    for prompt in config.samples:
        text = sample(model, tokenizer, prompt, chat=config.stage != "pretrain")
        if write:
            progress.write(f"  {prompt!r} → {text!r}")
            with open(out / "samples.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": step, "prompt": prompt, "output": text}, ensure_ascii=False) + "\n")
    model.train()


@functools.cache
def _measured_peak(dtype: torch.dtype, device_type: str) -> float:
    """The MFU reference where no published peak applies (the CPU): a large matmul's rate, measured once."""
    return measure_matmul_peak(dtype, device_type, seconds=0.5)


def _dtype(name: str, device: torch.device) -> torch.dtype:
    if name != "auto":
        return DTYPES[name]
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
