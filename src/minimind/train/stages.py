"""Training stages. A stage contributes its data, its model and its loss; the trainer owns everything else.

    pretrain   documents packed edge to edge (best fit with cropping)    next-token cross-entropy
    sft        whole conversations packed, padding at row ends          cross-entropy on assistant tokens
    lora       sft's data and loss; the trainer adds the adapters
    dpo        preference pairs packed a pair at a time                 DPO / IPO / SimPO (train/preference.py)
    reward     preference pairs, a reward model                         Bradley–Terry (train/preference.py)
    distill    sft's data, a frozen teacher                             α·CE + (1-α)·divergence (train/distill.py)

All read prepared data (tokenized once by `minimind.data.prepare`); the loss mask lives in the labels (-100 = not
a target) and documents are told apart by position_ids restarting at 0 (document-aware attention). The
registry of stages is `minimind.train.registry.STAGES`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from minimind.config import PRESETS, preset
from minimind.data.loader import PackedLoader, TokenData, target_report
from minimind.data.prepare import prepare
from minimind.errors import MiniMindError
from minimind.model import Transformer, load_model
from minimind.model.kernels import use_kernels
from minimind.model.loss import IGNORE_INDEX, token_logprobs


@dataclass
class StageData:
    train: TokenData
    rows: list
    val: TokenData | None
    val_rows: list


class Loss(NamedTuple):
    total: torch.Tensor                                  # Σ of the per-unit losses
    aux: torch.Tensor                                    # a regulariser already averaged over the batch, or 0
    metrics: dict[str, torch.Tensor] = {}                # Σ over units of per-unit figures (logged as means)


class Stage:
    """A stage's loss is a *sum* over its units (target tokens, preference pairs, …) with the units counted
    separately, so that the trainer divides by the count of the whole optimiser step: k accumulated
    micro-batches, or N DDP ranks, then give exactly the step one big batch would."""
    name: str                        # the prepared data format it reads, set from its registry entry
    pack: Callable                   # document lengths, seq_len → rows (minimind.data.packing)
    generative: bool = True          # the trainer samples generations from the model
    trains_on_targets: bool = True   # its loss reads the data's targets (RL's come from its rollouts instead)
    with_docs: bool = False          # batches carry "doc_ids"
    language_model: bool = True      # the model reads tokens (its vocabulary and context are checked)

    def build_model(self, source: str, device: torch.device) -> torch.nn.Module:
        """The model to train: fresh weights of a preset, or a model directory."""
        if source in PRESETS:
            return Transformer(preset(source)).to(device)
        model = load_model(model_dir(source), device=device, dtype=torch.float32)
        if model.config.is_diffusion:
            raise MiniMindError(f"config key 'model': {source} is a diffusion model; it trains with "
                                "objective=diffusion (stages pretrain and sft)")
        return model

    def frozen_start(self, source: str, config, device: torch.device) -> Transformer:
        """The language model at `source` (a directory, or a preset's fresh weights from the run's seed, exactly as
        the trainer made them, so a resumed run rebuilds the same ones), frozen: a reference for DPO and RL."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = use_kernels(Stage.build_model(self, source, device), config.kernels)
            return model.eval().requires_grad_(False)

    def setup(self, model, data: StageData, config, device: torch.device, autocast) -> None:
        """Anything frozen the loss needs beside the model (a reference model, a teacher), made once."""

    def loader(self, model, tokenizer, data: StageData, config, info, device: torch.device):
        """The iterator of training micro-batches (with `steps_per_epoch`, `state_dict`, `load_state_dict`):
        packed rows, shuffled per epoch and split across ranks."""
        return PackedLoader(data.train, data.rows, config.batch_size, config.data.seq_len, seed=config.seed,
                            rank=info.rank, world_size=info.world_size, pad_id=tokenizer.pad_id, device=device,
                            with_docs=self.with_docs)

    def validation(self, data: StageData, config, device: torch.device) -> list:
        """What `evaluate` runs on: the first eval_batches validation batches, the same every evaluation."""
        return val_batches(data, config, device, with_docs=self.with_docs)

    def tokens(self, batch: dict[str, torch.Tensor]) -> int:
        """Token slots the batch trains on (for tokens/s and MFU)."""
        return batch["input_ids"].numel()

    def policy(self, model):
        """The generating model inside `model` (for samples and rollouts): the model itself, but for PPO's
        actor-critic pair."""
        return model

    def step_log(self) -> dict:
        """Figures of the stage's own (e.g. of the latest rollout) added to each logged step."""
        return {}

    def build(self, config, tokenizer_dir: Path, main: bool, barrier: Callable[[], None]) -> StageData:
        """Prepare (rank 0; a cache hit when unchanged) and pack the train and validation files."""
        root = self.prepared_root(config)
        sets = {"train": config.data.train, "val": config.data.val}
        if main:
            for split, files in sets.items():
                if files:
                    self.prepare(files, tokenizer_dir, root / split)
        barrier()
        train = TokenData.open(root / "train")
        val = TokenData.open(root / "val") if config.data.val else None
        seq = config.data.seq_len
        rows = self.pack(train.doc_lengths, seq)
        if self.trains_on_targets:
            check_targets(target_report(train, rows), self.name, seq, announce=main)
        return StageData(train, rows, val, self.pack(val.doc_lengths, seq) if val else [])

    def prepare(self, files: list[str], tokenizer_dir: Path, out: Path) -> None:
        """Tokenize one split's files (a cache hit when unchanged)."""
        prepare(files, self.name, tokenizer_dir, out, progress=False)

    def prepared_root(self, config) -> Path:
        """Where this stage's prepared train/ and val/ directories go."""
        return Path(config.data.prepared or Path(config.out).parent / "prepared") / self.name

    def count(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Units the loss of `batch` sums over (a 0-d tensor on the batch's device)."""
        raise NotImplementedError

    def loss(self, model, batch: dict[str, torch.Tensor]) -> Loss:
        raise NotImplementedError

    def evaluate(self, model, batches: list[dict[str, torch.Tensor]], token_bytes: torch.Tensor) -> dict:
        raise NotImplementedError

    def flops_per_token(self, model, seq_len: int) -> int:
        """Training FLOPs per token of the whole step (frozen forwards included), for MFU."""
        return model.flops_per_token(seq_len)


def model_dir(source: str) -> str:
    if not Path(source).is_dir():
        raise MiniMindError(f"config key 'model': {source!r} is neither a preset ({', '.join(PRESETS)}) "
                            "nor a model directory")
    return source


class LanguageModelling(Stage):
    """Next-token cross-entropy on the labels' targets: pretraining (every token) and SFT (the assistant's)."""

    def __init__(self, pack: Callable):
        self.pack = pack

    def count(self, batch):
        return (batch["labels"][:, 1:] != IGNORE_INDEX).sum()

    def inputs(self, batch: dict[str, torch.Tensor]) -> dict:
        """Model inputs beside the tokens (the vision stages' pixel values)."""
        return {}

    def loss(self, model, batch):
        """Σ over target tokens of -log p(label | prefix) (targets: every token for pretrain, the assistant's
        for sft, as the labels say), and the MoE aux loss."""
        out = model(batch["input_ids"], labels=batch["labels"], position_ids=batch["position_ids"], reduction="sum",
                    **self.inputs(batch))
        return Loss(out.loss, out.aux_loss)

    @torch.no_grad()
    def evaluate(self, model, batches, token_bytes) -> dict:
        """Mean loss per target token and bits per byte: Σ nats / (ln 2 · Σ bytes) over targets that are text
        (special tokens count no bytes and are left out of both sums, so the figure compares across
        tokenizers)."""
        nats = torch.zeros((), dtype=torch.float64)
        count = torch.zeros((), dtype=torch.float64)
        text_nats = torch.zeros((), dtype=torch.float64)
        text_bytes = torch.zeros((), dtype=torch.float64)
        for batch in batches:
            logits = model(batch["input_ids"], position_ids=batch["position_ids"], **self.inputs(batch)).logits
            targets = batch["labels"][:, 1:]
            losses = -token_logprobs(logits, batch["labels"])[:, 1:].reshape(-1)
            valid = targets.reshape(-1) != IGNORE_INDEX
            nbytes = token_bytes[targets.reshape(-1).clamp(min=0)] * valid
            nats += losses.sum().double().cpu()
            count += valid.sum().double().cpu()
            text_nats += (losses * (nbytes > 0)).sum().double().cpu()
            text_bytes += nbytes.sum().double().cpu()
        return {"loss": (nats / count.clamp(min=1)).item(),
                "bpb": (text_nats / (math.log(2) * text_bytes.clamp(min=1))).item()}


def check_targets(report: dict, data_format: str, seq_len: int, announce: bool = True) -> None:
    """Say how many targets packing loses (`data.loader.target_report`), and refuse data whose rows keep none."""
    if report["targets_kept"] == 0:
        raise MiniMindError(f"{data_format} data: the rows of data.seq_len {seq_len} hold no training targets (of "
                            f"{report['targets']:,} in {report['docs']:,} documents): every loss would be 0; raise "
                            "data.seq_len or check the data's answers")
    if announce and report["docs_truncated"]:
        lost = report["targets_lost"] / max(report["targets"], 1)
        print(f"notice: {data_format} data: {report['docs_truncated']:,} of {report['docs']:,} documents do not fit "
              f"whole in rows of data.seq_len {seq_len}; {report['targets_lost']:,} of {report['targets']:,} target "
              f"tokens ({lost:.1%}) are not trained on", file=sys.stderr)


def token_bytes(tokenizer) -> torch.Tensor:
    """UTF-8 bytes of each token id [vocab]: a byte-level BPE token's string has one character per byte;
    special tokens count 0."""
    vocab = tokenizer.backend.get_vocab()
    special = {t.content for t in tokenizer.backend.get_added_tokens_decoder().values()}
    out = np.zeros(tokenizer.vocab_size, dtype=np.int64)
    for token, i in vocab.items():
        if token not in special and i < len(out):
            out[i] = len(token)
    return torch.from_numpy(out)


def val_batches(data: StageData, config, device, with_docs: bool = False) -> list[dict[str, torch.Tensor]]:
    """The first eval_batches batches of the validation rows, in a fixed order (the same every evaluation)."""
    if data.val is None or not data.val_rows:
        return []
    batch = min(config.batch_size, len(data.val_rows))
    loader = PackedLoader(data.val, data.val_rows, batch, config.data.seq_len, seed=0, device=device, epochs=1,
                          with_docs=with_docs)
    return [b for _, b in zip(range(config.eval_batches), loader, strict=False)]
