"""Sampling from a masked-diffusion model (LLaDA's semi-autoregressive sampler), behind the engine's interface.

The answer grows a block at a time. A block starts as `block_length` [MASK]s after the text so far, and each of
`steps` denoising steps runs the whole canvas through the model (no KV cache: attention is bidirectional) and
unmasks some of the block's positions:

    z = logits at the block's positions             CFG (scale s > 0): z = z_u + (1 + s)·(z_c − z_u), where z_u sees
                                                                        the prompt replaced by [MASK]s
    z[MASK] = −∞                                    [MASK] can never be chosen, so none survives in the output
    x̂_i = argmax(z_i)  or  ~ softmax(filter(z_i)/T) (Gumbel-max in float64; top-k/top-p/min-p as the AR engine)
    c_i = softmax(z_i)[x̂_i] (low_confidence)  or  c_i ~ U(0, 1) (random)
    unmask the k still-masked positions of highest c_i with x̂_i;  k = the block's masks split evenly over its steps

After its last step every position of the block is unmasked (the k sum to the block). An end-of-turn token (or
another stop id) ends the answer: once it is unmasked, the block's later positions leave the canvas (a training
document never sees past its end either), and the block's text is emitted up to it. A Batch step is one denoising
step of every row; a row emits text when it completes a block (streaming block by block) and shows the block
being denoised in `Delta.canvas`. Rows of different requests batch together, left-padded.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch

from minimind.errors import MiniMindError
from minimind.infer.engine import Delta, Engine, Row
from minimind.infer.sampling import SamplingParams, filter_logits
from minimind.tokenizer import Tokenizer

MASK_GLYPH = "░"
REMASKING = ("low_confidence", "random")


@dataclass
class DiffusionParams:
    block_length: int = 32           # tokens unmasked per block (block_length ≥ max_new_tokens: one fixed block)
    steps: int = 32                  # denoising steps per block (steps = block_length: one token per step)
    remasking: Literal[REMASKING] = "low_confidence"   # which positions keep their guess: most confident, or random
    cfg_scale: float = 0.0           # classifier-free guidance: 0 = off

    def validate(self) -> None:
        if self.block_length < 1 or self.steps < 1:
            raise MiniMindError("diffusion sampling: block_length and steps must be ≥ 1")
        if self.remasking not in REMASKING:
            raise MiniMindError(f"diffusion sampling: remasking must be one of {', '.join(REMASKING)}; "
                                f"got {self.remasking!r}")
        if not self.cfg_scale >= 0:
            raise MiniMindError("diffusion sampling: cfg_scale must be ≥ 0")


def transfer_counts(masked: int, steps: int) -> list[int]:
    """Positions unmasked at each step: `masked` split evenly over min(steps, masked) steps, the remainder to the
    first ones (LLaDA's linear schedule). Sums to `masked`."""
    steps = max(1, min(steps, masked))
    base, extra = divmod(masked, steps)
    return [base + (i < extra) for i in range(steps)]


class _Canvas:
    """One row's denoising state: the text so far (prompt + committed blocks) and the current block."""

    def __init__(self, row: Row, prompt: list[int]):
        self.row, self.prompt_len, self.tokens, self.budget = row, len(prompt), list(prompt), row.max_new_tokens
        self.block: list[int] = []       # the block's ids ([MASK] where undecided)
        self.alive: list[bool] = []      # False: past an unmasked end-of-turn token, out of the canvas
        self.schedule: list[int] = []    # positions to unmask at each remaining step


class DiffusionBatch:
    """Rows being denoised; the same interface as `engine.Batch` (the server's scheduler drives either)."""

    def __init__(self, engine: DiffusionEngine, canvases: list[_Canvas]):
        self.engine, self.canvases = engine, canvases

    @property
    def rows(self) -> list[Row]:
        return [c.row for c in self.canvases]

    def __len__(self) -> int:
        return len(self.canvases)

    def extend(self, other: DiffusionBatch) -> None:
        self.canvases += other.canvases

    def cancel(self, handle: Hashable) -> None:
        self.canvases = [c for c in self.canvases if c.row.request.handle != handle]

    @torch.inference_mode()
    def step(self) -> list[Delta]:
        """One denoising step of every row; a row whose block is complete emits its text."""
        engine, mask_id = self.engine, self.engine.mask_id
        for c in self.canvases:
            if not c.block:
                size = min(engine.params.block_length, c.budget - len(c.tokens) + c.prompt_len)
                c.block, c.alive = [mask_id] * size, [True] * size
                c.schedule = transfer_counts(size, engine.params.steps)
        logits = engine.block_logits(self.canvases)
        deltas = []
        for c, z in zip(self.canvases, logits, strict=True):
            masked = [i for i, (t, a) in enumerate(zip(c.block, c.alive, strict=True)) if a and t == mask_id]
            guess, confidence = engine.choose(z[masked], c.row)
            take = confidence.topk(min(c.schedule.pop(0), len(masked))).indices.tolist()
            for j in take:
                c.block[masked[j]] = guess[j]
            ends = [i for i, t in enumerate(c.block) if t in c.row.stop_ids and c.alive[i]]
            if ends:                                         # the answer ends here: later positions leave
                c.alive = [a and i <= ends[0] for i, a in enumerate(c.alive)]
            done = not any(a and t == mask_id for t, a in zip(c.block, c.alive, strict=True))
            deltas.append(self._commit(c) if done else
                          Delta(c.row.index, "", mask_id, None, request=c.row.request.handle,
                                canvas=engine.render(c.block, c.alive), tokens=0))
        self.canvases = [c for c in self.canvases if c.row.out.finish_reason is None]
        return deltas

    def _commit(self, c: _Canvas) -> Delta:
        """The completed block's tokens go through the row's stop logic; the canvas moves on."""
        block = [t for t, a in zip(c.block, c.alive, strict=True) if a]
        assert self.engine.mask_id not in block, "a completed block holds no [MASK]"
        text, pushed = "", 0
        for token in block:
            text += c.row.push(token, None, None)
            pushed += 1
            if c.row.out.finish_reason is not None:
                break
        c.tokens += block
        c.block, c.alive = [], []
        return Delta(c.row.index, text, block[pushed - 1], c.row.out.finish_reason, request=c.row.request.handle,
                     canvas=self.engine.render(block, [True] * len(block)), tokens=pushed)


class DiffusionEngine(Engine):
    """`Engine`'s interface (generate, stream, chat, start → a batch) for a diffusion model directory."""

    def __init__(self, model, tokenizer: Tokenizer, params: DiffusionParams | None = None):   # not Engine's: no cache
        if not model.config.is_diffusion:
            raise MiniMindError("DiffusionEngine samples diffusion models; this one is causal (use Engine)")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.params = params or DiffusionParams()
        self.params.validate()
        self.mask_id = model.config.mask_token_id
        self.device = model.lm_head.weight.device

    # ---- the engine's public API: generate, stream, chat_prompt and chat are Engine's, over this start ----------

    def start(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams],
              handles: list[Hashable] | None = None, images: list[list] | None = None,
              audios: list[list] | None = None) -> DiffusionBatch:
        """A batch of n rows per prompt (rows report handles[i], or i; index i·n + j, or j with handles)."""
        params = params if isinstance(params, list) else [params] * len(prompts)
        for p in params:
            self.check_params(p)
        self.check_prompts(prompts)
        self.check_images(prompts, images)
        self.check_audios(prompts, audios)
        row_prompts = [prompt for prompt, p in zip(prompts, params, strict=True) for _ in range(p.n)]
        return DiffusionBatch(self, [_Canvas(row, prompt) for row, prompt in
                                     zip(self._rows(prompts, params, handles), row_prompts, strict=True)])

    def prefill(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams],
                handles: list[Hashable] | None = None, images: list[list] | None = None,
                audios: list[list] | None = None, chunk: int | None = None) -> Iterator[DiffusionBatch]:
        """No cache to fill: the batch at once (what the server's scheduler asks of every engine)."""
        yield self.start(prompts, params, handles, images, audios)

    def check_params(self, params: SamplingParams) -> None:
        """Valid sampling values, without those a diffusion sampler cannot honour (refused by name)."""
        params.validate()
        if params.logprobs is not None:
            raise MiniMindError("a diffusion model gives no per-token log-probabilities while sampling (logprobs)")
        if params.repetition_penalty != 1 or params.presence_penalty or params.frequency_penalty:
            raise MiniMindError("repetition, presence and frequency penalties need left-to-right decoding; a "
                                "diffusion model does not decode in order")

    def check_prompts(self, prompts: list[list[int]]) -> None:
        """Engine's checks, and no [MASK] in a prompt."""
        super().check_prompts(prompts)
        if any(self.mask_id in p for p in prompts):
            raise MiniMindError(f"the prompt holds the model's [MASK] token (id {self.mask_id}, "
                                f"{self.tokenizer.decode([self.mask_id], skip_special_tokens=False)!r})")

    def check_images(self, prompts: list[list[int]], images: list[list] | None) -> None:
        if images and any(images):
            raise MiniMindError("this model reads no images (a diffusion language model)")

    def check_audios(self, prompts: list[list[int]], audios: list[list] | None) -> None:
        if audios and any(audios):
            raise MiniMindError("this model hears no audio (a diffusion language model)")

    # ---- the sampler's pieces -----------------------------------------------------------------------------

    def block_logits(self, canvases: list[_Canvas]) -> list[torch.Tensor]:
        """Each row's logits at its block's positions [block, V] (fp32), guided when cfg_scale > 0."""
        seqs = [c.tokens + [t if a else self.tokenizer.pad_id for t, a in zip(c.block, c.alive, strict=True)]
                for c in canvases]
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), self.tokenizer.pad_id, dtype=torch.long)
        keep = torch.zeros((len(seqs), width), dtype=torch.long)
        for b, (seq, c) in enumerate(zip(seqs, canvases, strict=True)):          # left padding
            ids[b, width - len(seq):] = torch.tensor(seq)
            keep[b, width - len(seq):] = torch.tensor([1] * len(c.tokens) + [int(a) for a in c.alive])
        ids, keep = ids.to(self.device), keep.to(self.device)
        block = max(len(c.block) for c in canvases)
        z = self.model(ids, attention_mask=keep).logits[:, -block:].float()
        if self.params.cfg_scale:
            unconditional = ids.clone()
            for b, c in enumerate(canvases):                   # the prompt replaced by [MASK]s
                start = width - len(seqs[b])
                unconditional[b, start:start + c.prompt_len] = self.mask_id
            z_u = self.model(unconditional, attention_mask=keep).logits[:, -block:].float()
            z = z_u + (1 + self.params.cfg_scale) * (z - z_u)
        z[..., self.mask_id] = float("-inf")
        return [z[b, block - len(c.block):] for b, c in enumerate(canvases)]

    def choose(self, z: torch.Tensor, row: Row) -> tuple[list[int], torch.Tensor]:
        """Guesses and confidences for the masked positions' logits z [m, V]."""
        params = row.request.params
        if params.temperature == 0:
            guess = z.argmax(-1)
        else:
            scores = filter_logits(z, params).double()
            u = torch.rand(scores.shape, dtype=torch.float64, generator=row.generator, device=z.device)
            guess = (scores - torch.log(-torch.log(u.clamp(min=1e-300)))).argmax(-1)   # Gumbel-max in float64
        if self.params.remasking == "random":
            confidence = torch.rand(len(guess), generator=row.generator, device=z.device)
        else:
            confidence = z.softmax(-1).gather(-1, guess[:, None])[:, 0]
        return guess.tolist(), confidence

    def render(self, block: list[int], alive: list[bool]) -> str:
        """A block as text, each [MASK] as ░ (runs of decided tokens decoded together)."""
        out = []
        for is_mask, run in itertools.groupby((t for t, a in zip(block, alive, strict=True) if a),
                                              key=lambda t: t == self.mask_id):
            run = list(run)
            out.append(MASK_GLYPH * len(run) if is_mask else self.tokenizer.decode(run, skip_special_tokens=True))
        return "".join(out)

    def _draws(self, params: SamplingParams) -> bool:
        """Sampling at a temperature, or random remasking, draws random numbers."""
        return params.temperature != 0 or self.params.remasking == "random"


def engine_for(model, tokenizer: Tokenizer, compile: bool = False, diffusion: DiffusionParams | None = None):
    """The engine that samples `model`: `Engine` for a causal model, `DiffusionEngine` for a diffusion one."""
    if model.config.is_diffusion:
        return DiffusionEngine(model, tokenizer, diffusion)
    return Engine(model, tokenizer, compile=compile)
