"""Knowledge distillation: white-box (a teacher's logits) as a training stage, black-box (a teacher's answers) as
data generation.

White-box, on sft data, per target token t (the assistant's tokens) with temperature τ:

    loss_t = α · CE(p_S, y_t) + (1 - α) · τ² · D(p_T^τ, p_S^τ)         p^τ = softmax(logits / τ)

    forward  D = KL(p_T ‖ p_S) = Σ_v p_T (log p_T - log p_S)            covers the teacher's modes
    reverse  D = KL(p_S ‖ p_T) = Σ_v p_S (log p_S - log p_T)            seeks one mode
    jsd      D = β·KL(p_T ‖ M) + (1-β)·KL(p_S ‖ M),  M = β·p_T + (1-β)·p_S     generalised JSD (GKD), 0 < β < 1

τ² keeps the gradient's scale independent of τ (Hinton et al.). The teacher shares the student's tokenizer (a
larger teacher vocabulary is cut to the student's, as the reference does); it runs without gradients, and its
logits are made `chunk_tokens` positions at a time from its hidden states, so the [B, T, V] teacher logits never
exist at once.

Black-box (`minimind distill --generate`): the teacher answers the prompts of a jsonl file and the answers are
written as sft records, on which the student is then fine-tuned like any sft data.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from minimind.data.formats import read_records
from minimind.data.packing import pack_sft
from minimind.errors import MiniMindError
from minimind.fileio import atomic_write_text
from minimind.infer import Engine, SamplingParams
from minimind.model import Transformer, load_model
from minimind.model.loss import IGNORE_INDEX, token_logprobs
from minimind.train.stages import LanguageModelling, Loss


@dataclass
class DistillConfig:
    teacher: str = ""                 # the teacher's model directory (the student's tokenizer)
    divergence: Literal["forward", "reverse", "jsd"] = "forward"
    jsd_beta: float = 0.5             # jsd: the teacher's weight in the mixture M
    temperature: float = 1.0          # τ (the reference uses 1.5)
    alpha: float = 0.5                # weight of the cross-entropy on the data; 1 - α on the divergence
    chunk_tokens: int = 1024          # teacher logits are computed this many positions at a time

    def validate(self) -> None:
        if not self.teacher:
            raise MiniMindError("config key 'distill.teacher' must name the teacher's model directory")
        if self.temperature <= 0 or not 0 <= self.alpha <= 1 or not 0 < self.jsd_beta < 1:
            raise MiniMindError("config keys 'distill.temperature' > 0, 0 ≤ 'distill.alpha' ≤ 1 and "
                                "0 < 'distill.jsd_beta' < 1 are required")
        if self.chunk_tokens < 1:
            raise MiniMindError("config key 'distill.chunk_tokens' must be ≥ 1")


def divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: str, temperature: float = 1.0,
               jsd_beta: float = 0.5) -> torch.Tensor:
    """[..., V] logits → [...] the divergence D of the two tempered distributions (fp32; module docstring)."""
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if kind == "forward":
        return (t.exp() * (t - s)).sum(-1)
    if kind == "reverse":
        return (s.exp() * (s - t)).sum(-1)
    if kind == "jsd":
        m = torch.logsumexp(torch.stack([t + math.log(jsd_beta), s + math.log(1 - jsd_beta)]), dim=0)
        return jsd_beta * (t.exp() * (t - m)).sum(-1) + (1 - jsd_beta) * (s.exp() * (s - m)).sum(-1)
    raise ValueError(f"unknown divergence {kind!r}")


class Distill(LanguageModelling):
    def __init__(self, config):
        super().__init__(pack_sft)
        self.options: DistillConfig = config.distill
        self.teacher: Transformer | None = None

    def setup(self, model, data, config, device, autocast) -> None:
        teacher_dir = Path(self.options.teacher)
        teacher = load_model(teacher_dir, device=device, dtype=torch.float32, kernels=config.kernels)
        if teacher.config.vocab_size < model.config.vocab_size:
            raise MiniMindError(f"config key 'distill.teacher': {teacher_dir} has a vocabulary of "
                                f"{teacher.config.vocab_size}, smaller than the student's {model.config.vocab_size}")
        student_tokenizer = Path(config.model) / "tokenizer.json"
        if (teacher_dir / "tokenizer.json").is_file() and student_tokenizer.is_file() and \
                (teacher_dir / "tokenizer.json").read_bytes() != student_tokenizer.read_bytes():
            raise MiniMindError(f"config key 'distill.teacher': {teacher_dir}'s tokenizer differs from the "
                                f"student's ({student_tokenizer}); white-box distillation needs the same one")
        self.teacher = teacher.eval().requires_grad_(False)

    def _terms(self, model, batch):
        """(per-position CE [B, T-1], per-position divergence [B, T-1], target mask [B, T-1], aux loss)."""
        o = self.options
        targets = batch["labels"][:, 1:]
        out = model(batch["input_ids"], position_ids=batch["position_ids"])
        student = out.logits[:, :-1]
        vocab = student.shape[-1]
        ce = -token_logprobs(out.logits, batch["labels"])[:, 1:]
        with torch.no_grad():
            hidden, _ = self.teacher.model(batch["input_ids"], position_ids=batch["position_ids"])
            hidden = hidden[:, :-1].flatten(0, 1)
        flat = student.flatten(0, 1)
        pieces = []
        for first in range(0, flat.shape[0], o.chunk_tokens):
            with torch.no_grad():
                teacher = self.teacher.lm_head(hidden[first:first + o.chunk_tokens])[:, :vocab]
            pieces.append(divergence(flat[first:first + o.chunk_tokens], teacher, o.divergence, o.temperature,
                                     o.jsd_beta))
        mask = targets != IGNORE_INDEX
        return ce, torch.cat(pieces).view_as(targets) * mask, mask, out.aux_loss

    def loss(self, model, batch):
        o = self.options
        ce, div, _, aux = self._terms(model, batch)
        ce_sum, div_sum = ce.sum(), div.sum()
        total = o.alpha * ce_sum + (1 - o.alpha) * o.temperature ** 2 * div_sum
        return Loss(total, aux, {"ce": ce_sum.detach(), "divergence": div_sum.detach()})

    @torch.no_grad()
    def evaluate(self, model, batches, token_bytes) -> dict:
        """The language-modelling figures (loss = CE, bpb) and the mean divergence to the teacher per target."""
        div_sum = count = 0.0
        for batch in batches:
            _, div, mask, _ = self._terms(model, batch)
            div_sum += div.sum().item()
            count += mask.sum().item()
        return super().evaluate(model, batches, token_bytes) | {"divergence": div_sum / max(count, 1)}

    def flops_per_token(self, model, seq_len: int) -> int:
        """The student's forward and backward plus the teacher's forward."""
        return model.flops_per_token(seq_len) + self.teacher.flops_per_token(seq_len) // 3


def generate_answers(teacher_dir: str | Path, prompts_file: str | Path, out_file: str | Path,
                     params: SamplingParams, batch_size: int = 16, device: str | None = None,
                     keep_truncated: bool = False) -> dict:
    """Black-box distillation data: the teacher answers each prompt of `prompts_file` (sft or rl records: the
    conversation up to its last user turn; a trailing assistant message is dropped) and every answer that
    ended by itself (not cut at max_new_tokens, unless keep_truncated) becomes an sft record of `out_file`,
    {"conversations": [..., {"role": "assistant", "content": answer}], "tools"?}. Returns the counts."""
    from minimind.tokenizer import load_tokenizer, tokenizer_dir

    teacher = load_model(teacher_dir, device=device)
    engine = Engine(teacher, load_tokenizer(tokenizer_dir(teacher_dir)))
    records = list(read_records(prompts_file, "rl"))
    lines, truncated = [], 0
    for first in range(0, len(records), batch_size):
        chunk = records[first:first + batch_size]
        prompts = [engine.chat_prompt(r["messages"], r["tools"]) for r in chunk]
        for record, completions in zip(chunk, engine.generate(prompts, params), strict=True):
            for completion in completions:
                if completion.finish_reason != "stop" and not keep_truncated:
                    truncated += 1
                    continue
                out = {"conversations": [*record["messages"], {"role": "assistant", "content": completion.text}]}
                if record["tools"]:
                    out["tools"] = record["tools"]
                lines.append(json.dumps(out, ensure_ascii=False) + "\n")
    atomic_write_text(out_file, "".join(lines))
    return {"prompts": len(records), "answers": len(lines), "truncated": truncated}
