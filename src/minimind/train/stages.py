"""Training stages. A stage contributes its data and its loss; the trainer owns everything else.

    pretrain   documents packed edge to edge (best fit with cropping)    next-token cross-entropy
    sft        whole conversations packed, padding at row ends          cross-entropy on assistant tokens

Both read prepared data (tokenized once by `minimind.data.prepare`); the loss mask lives in the labels
(-100 = not a target), so both losses are the model's own shifted cross-entropy over packed rows with
document-aware attention. A later stage (DPO, distillation, RL) subclasses `Stage`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from minimind.data.loader import PackedLoader, TokenData
from minimind.data.packing import pack_pretrain, pack_sft
from minimind.data.prepare import prepare
from minimind.model.transformer import IGNORE_INDEX, cross_entropy


@dataclass
class StageData:
    train: TokenData
    rows: list
    val: TokenData | None
    val_rows: list


class Stage:
    """A stage's loss is a *sum* over its units (target tokens, preference pairs, …) with the units counted
    separately, so that the trainer divides by the count of the whole optimiser step: k accumulated
    micro-batches, or N DDP ranks, then give exactly the step one big batch would."""
    name: str

    def build(self, config, tokenizer_dir: Path, main: bool, barrier: Callable[[], None]) -> StageData:
        raise NotImplementedError

    def count(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Units the loss of `batch` sums over (a 0-d tensor on the batch's device)."""
        raise NotImplementedError

    def loss(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(Σ of the per-unit losses, a regulariser already averaged over the batch — the MoE aux loss — or 0)."""
        raise NotImplementedError

    def evaluate(self, model, batches: list[dict[str, torch.Tensor]], token_bytes: torch.Tensor) -> dict:
        raise NotImplementedError


@dataclass
class LanguageModelling(Stage):
    name: str
    pack: Callable

    def build(self, config, tokenizer_dir, main, barrier) -> StageData:
        """Prepare (rank 0; a cache hit when unchanged) and pack the train and validation files."""
        root = Path(config.data.prepared or Path(config.out).parent / "prepared") / self.name
        sets = {"train": config.data.train, "val": config.data.val}
        if main:
            for split, files in sets.items():
                if files:
                    prepare(files, self.name, tokenizer_dir, root / split, progress=False)
        barrier()
        train = TokenData.open(root / "train")
        val = TokenData.open(root / "val") if config.data.val else None
        seq = config.data.seq_len
        return StageData(train, self.pack(train.doc_lengths, seq), val, self.pack(val.doc_lengths, seq) if val else [])

    def count(self, batch):
        return (batch["labels"][:, 1:] != IGNORE_INDEX).sum()

    def loss(self, model, batch):
        """Σ over target tokens of -log p(label | prefix) (targets: every token for pretrain, the assistant's
        for sft, as the labels say), and the MoE aux loss."""
        out = model(batch["input_ids"], position_ids=batch["position_ids"])
        return cross_entropy(out.logits[:, :-1], batch["labels"][:, 1:], reduction="sum"), out.aux_loss

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
            logits = model(batch["input_ids"], position_ids=batch["position_ids"]).logits[:, :-1]
            targets = batch["labels"][:, 1:]
            losses = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                     ignore_index=IGNORE_INDEX, reduction="none")
            valid = targets.reshape(-1) != IGNORE_INDEX
            nbytes = token_bytes[targets.reshape(-1).clamp(min=0)] * valid
            nats += losses.sum().double().cpu()
            count += valid.sum().double().cpu()
            text_nats += (losses * (nbytes > 0)).sum().double().cpu()
            text_bytes += nbytes.sum().double().cpu()
        return {"loss": (nats / count.clamp(min=1)).item(),
                "bpb": (text_nats / (math.log(2) * text_bytes.clamp(min=1))).item()}


STAGES: dict[str, Stage] = {
    "pretrain": LanguageModelling("pretrain", pack_pretrain),
    "sft": LanguageModelling("sft", pack_sft),
    "lora": LanguageModelling("sft", pack_sft),        # SFT data and loss; the trainer adds the adapters
}


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


def val_batches(data: StageData, config, device) -> list[dict[str, torch.Tensor]]:
    """The first eval_batches batches of the validation rows, in a fixed order (the same every evaluation)."""
    if data.val is None or not data.val_rows:
        return []
    batch = min(config.batch_size, len(data.val_rows))
    loader = PackedLoader(data.val, data.val_rows, batch, config.data.seq_len, seed=0, device=device, epochs=1)
    return [b for _, b in zip(range(config.eval_batches), loader, strict=False)]
