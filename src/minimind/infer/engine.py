"""The generation engine: every caller (chat, server, evaluation, RL rollouts) generates through it.

    prompts ─ [prefill their common prefix once, copy it to every row] ─ left-pad the rest ─ prefill [B, L] into
    a KV cache ─ repeat each row n times (shared prefill) → a Batch
    Batch.step(): sample each request's rows ─ detokenise ─ stops ─ drop finished rows ─ decode step [R, 1]

A Batch is the state of the rows being decoded. Every row writes the cache at its own index, so a batch can
take new requests between steps (`extend`: continuous batching, as the server's scheduler does) and lose
finished or cancelled ones (`cancel`); `generate` and `stream` run one batch to its end. Text is emitted only
when it is complete UTF-8 and cannot be the beginning of a stop string, so a stream never shows half a
character or half a stop. One host sync per step (the sampled ids).

A vision-language model's prompts may carry images (uint8 [S, S, 3] arrays, one per `<image>` marker of the
conversation): they are spliced in during the prefill, and the cache keeps them for every later step.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from minimind.data.formats import expand_audio_markers, expand_image_markers
from minimind.errors import MiniMindError
from minimind.infer.sampling import SamplingParams, apply_penalties, sample
from minimind.model.audio import batch_mels
from minimind.model.cache import KVCache
from minimind.model.kernels.few_rows import decoding, pack_weights
from minimind.model.layers import autocast_dtype
from minimind.model.omni import check_audio_tokens
from minimind.model.transformer import Transformer
from minimind.model.vision import pixel_values
from minimind.model.vlm import check_image_tokens
from minimind.tokenizer import ParsedOutput, Tokenizer, parse_output


@dataclass
class Completion:
    token_ids: list[int] = field(default_factory=list)   # generated ids, a final stop token included
    text: str = ""                                       # decoded, special tokens and stop strings removed
    finish_reason: str | None = None                     # "stop" | "length"
    logprobs: list[float] | None = None                  # log p(token) under the model (before sampling filters)
    top_logprobs: list[list[tuple[int, float]]] | None = None


@dataclass
class Delta:
    """What one row produced in one step: new text (possibly empty) and, at the end, the finish reason."""
    index: int                      # the row's index: prompt i, sample j → i·n + j (within its request: j)
    text: str
    token_id: int
    finish_reason: str | None = None
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] | None = None
    request: Hashable = None        # the handle the row's request was started with
    canvas: str | None = None       # a diffusion row's block being denoised, [MASK] shown as ░ (infer/diffusion.py)
    tokens: int = 1                 # tokens it adds to the output (a diffusion row: a block at once, or none)


class Request:
    """What a prompt's rows share: sampling parameters, stop ids and the caller's handle."""

    def __init__(self, params: SamplingParams, stop_ids: set[int], handle: Hashable):
        self.params, self.stop_ids, self.handle = params, stop_ids, handle
        self.penalties = bool(params.repetition_penalty != 1 or params.presence_penalty or params.frequency_penalty)


class Row:
    """One sequence's detokenisation and stop logic."""

    def __init__(self, tokenizer: Tokenizer, request: Request, index: int, max_new_tokens: int,
                 generator: torch.Generator | None):
        self.tokenizer, self.request, self.index, self.generator = tokenizer, request, index, generator
        self.stops, self.stop_ids = request.params.stop, request.stop_ids
        self.max_new_tokens = max_new_tokens        # the request's, or what the context leaves this prompt
        want_logprobs = request.params.logprobs is not None
        self.out = Completion(logprobs=[] if want_logprobs else None, top_logprobs=[] if want_logprobs else None)
        self.emitted = 0                       # characters of the decoded text already handed out

    def push(self, token: int, logprob: float | None, top: list[tuple[int, float]] | None) -> str:
        out = self.out
        out.token_ids.append(token)
        if logprob is not None:
            out.logprobs.append(logprob)
            out.top_logprobs.append(top)
        if token in self.stop_ids:
            out.finish_reason = "stop"
            return self._emit(out.text, final=True)
        text = self.tokenizer.decode(out.token_ids, skip_special_tokens=True)
        for stop in self.stops:
            cut = text.find(stop)
            if cut >= 0:
                out.finish_reason = "stop"
                out.text = text[:cut]
                return self._emit(out.text, final=True)
        out.text = text
        if len(out.token_ids) >= self.max_new_tokens:
            out.finish_reason = "length"
            return self._emit(text, final=True)
        return self._emit(text, final=False)

    def _emit(self, text: str, final: bool) -> str:
        """The new text that is safe to show: not a trailing partial UTF-8 character (U+FFFD while the next
        token completes it) and not a possible beginning of a stop string."""
        end = len(text)
        if not final:
            end = len(text.rstrip("\ufffd"))
            held = max((k for stop in self.stops for k in range(1, len(stop)) if text[:end].endswith(stop[:k])),
                       default=0)
            end -= held
        delta = text[self.emitted:max(end, self.emitted)]
        self.emitted = max(end, self.emitted)
        return delta


class Batch:
    """Rows being decoded. Per row: its cache (written at `write_at`), rotary position, key mask (False on
    left padding), next-token logits, and the tokens seen so far (for penalties)."""

    def __init__(self, engine: Engine, rows: list[Row], cache: KVCache, key_mask: torch.Tensor, padded: bool,
                 positions: torch.Tensor, write_at: list[int], logits: torch.Tensor, seen: torch.Tensor):
        self.engine, self.rows, self.cache, self.key_mask = engine, rows, cache, key_mask
        self.positions, self.write_at, self.logits, self.seen = positions, write_at, logits, seen
        self.counts = torch.zeros_like(logits)
        self.padded = padded                             # any row has left padding (a host bool: no sync)
        cache.write_at = torch.tensor(write_at, device=logits.device)

    def __len__(self) -> int:
        return len(self.rows)

    @torch.inference_mode()
    def extend(self, other: Batch) -> None:
        """Add other's rows (new requests joining between steps)."""
        slots = self.cache.batch_size                   # ≥ len(self): the compiled step pads rows to a bucket
        self.cache.extend(other.cache)
        self._select_cache_rows(list(range(len(self))) + list(range(slots, slots + len(other))))
        self.key_mask = torch.cat([_pad_mask(self.key_mask, self.cache.max_len),
                                   _pad_mask(other.key_mask, self.cache.max_len)])
        self.rows += other.rows
        self.write_at += other.write_at
        self.padded = self.padded or other.padded
        self.cache.write_at = torch.cat([self.cache.write_at, other.cache.write_at])
        for name in ("positions", "logits", "seen", "counts"):
            setattr(self, name, torch.cat([getattr(self, name), getattr(other, name)]))

    @torch.inference_mode()
    def cancel(self, handle: Hashable) -> None:
        """Drop the rows of the request started with `handle`."""
        self._keep([r for r, row in enumerate(self.rows) if row.request.handle != handle])

    @torch.inference_mode()
    def step(self) -> list[Delta]:
        """Sample every row's next token, then run the model on the rows that are not finished."""
        tokens = torch.empty(len(self.rows), dtype=torch.long, device=self.logits.device)
        logprobs = {}
        # consecutive rows with equal sampling values are processed together (one group for `generate`)
        for params, group in itertools.groupby(range(len(self.rows)), key=lambda r: self.rows[r].request.params):
            group = list(group)
            rows = slice(group[0], group[-1] + 1)
            logits = self.logits[rows]
            if params.logprobs is not None:
                logprobs[rows.start] = (logits.log_softmax(dim=-1), params.logprobs)
            if self.rows[group[0]].request.penalties:
                logits = apply_penalties(logits, self.seen[rows], self.counts[rows], params)
            tokens[rows] = sample(logits, params, [self.rows[r].generator for r in group])
        chosen, top = _logprobs(logprobs, tokens)
        deltas = []
        for r, token in enumerate(tokens.tolist()):                     # the step's one host sync
            row = self.rows[r]
            text = row.push(token, chosen.get(r), top.get(r))
            deltas.append(Delta(row.index, text, token, row.out.finish_reason, chosen.get(r), top.get(r),
                                row.request.handle))
        self.seen.scatter_(1, tokens[:, None], True)
        self.counts.scatter_add_(1, tokens[:, None], torch.ones_like(self.counts[:, :1]))
        live = [r for r, row in enumerate(self.rows) if row.out.finish_reason is None]
        if len(live) < len(self.rows):
            self._keep(live)
            tokens = tokens[live]
        if self.rows:
            self._forward(tokens)
        return deltas

    def _keep(self, rows: list[int]) -> None:
        index = torch.tensor(rows, dtype=torch.long, device=self.logits.device)
        self.rows = [self.rows[r] for r in rows]
        self.write_at = [self.write_at[r] for r in rows]
        self._select_cache_rows(rows)
        self.cache.write_at = self.cache.write_at[index]
        for name in ("key_mask", "positions", "logits", "seen", "counts"):
            setattr(self, name, getattr(self, name)[index])

    def _select_cache_rows(self, live: list[int]) -> None:
        """Keep the cache rows `live` (in order) and pad them with copies of the first up to the rows the next step
        runs: the compiled step's row bucket (padding rows decode alongside and are dropped), else just these."""
        index = live + live[:1] * (self.engine._slots(len(live)) - len(live))
        if index != list(range(self.cache.batch_size)):
            self.cache.select_rows(torch.tensor(index, dtype=torch.long, device=self.logits.device))

    def _forward(self, tokens: torch.Tensor) -> None:
        needed = max(self.write_at) + 1
        if needed > self.cache.max_len:
            self.cache.grow(_capacity(needed))
            self.key_mask = _pad_mask(self.key_mask, self.cache.max_len)
        with decoding(self.engine._packs):
            if self.engine._compiled_step and len(self.rows) <= ROW_BUCKETS[-1]:
                self.logits = self._compiled_forward(tokens)
            else:
                self.cache.length = needed
                aligned = not self.padded and min(self.write_at) == needed - 1
                self.logits = self.engine.model.decode_step(tokens[:, None], self.positions,
                                                            None if aligned else self.key_mask, self.cache).float()
        self.cache.write_at += 1
        self.positions += 1
        self.write_at = [w + 1 for w in self.write_at]

    def _compiled_forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """The compiled step on the rows padded to their bucket, each padding row a copy of row 0 writing its own
        cache row; static shapes (every cache position attended to under the mask), so one compilation per
        (bucket, capacity)."""
        n = len(self.rows)
        slots = self.engine._slots(n)
        if self.cache.batch_size != slots:
            self._select_cache_rows(list(range(n)))
        index = torch.tensor(list(range(n)) + [0] * (slots - n), device=tokens.device)
        live_write_at = self.cache.write_at
        self.cache.write_at, self.cache.length = live_write_at[index], self.cache.max_len
        logits = self.engine.compiled_decode(tokens[index, None], self.positions[index], self.key_mask[index],
                                             self.cache)
        self.cache.write_at = live_write_at
        return logits[:n].float()


SHARED_PREFIX_MIN = 32      # tokens; a shorter common prefix is not worth a forward of its own
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64)      # rows the compiled decode step is traced for (more rows: eager)


def _shared_prefix(prompts: list[list[int]]) -> int:
    """The length of the prompts' common prefix when it is worth prefilling once for all of them (a system prompt
    such as a tool list, an agent's earlier turns), else 0. Every prompt keeps at least its last token."""
    if len(prompts) < 2:
        return 0
    first, limit = prompts[0], min(map(len, prompts)) - 1
    n = 0
    while n < limit and all(p[n] == first[n] for p in prompts):
        n += 1
    return n if n >= SHARED_PREFIX_MIN else 0


def _pad_mask(key_mask: torch.Tensor, capacity: int) -> torch.Tensor:
    """The key mask [rows, capacity]: positions beyond the old capacity are not padding (True)."""
    return torch.nn.functional.pad(key_mask, (0, capacity - key_mask.shape[1]), value=True)


def _capacity(positions: int) -> int:
    """Cache lengths are powers of two (≥ 128): few distinct shapes, so few compilations and reallocations."""
    return max(128, 1 << (positions - 1).bit_length())


def compile_bound(context: int) -> int:
    """The most compilations a compiled engine makes: one per row bucket and cache capacity (128 … ≥ context)."""
    return len(ROW_BUCKETS) * (_capacity(context).bit_length() - 7)


def _logprobs(logprobs: dict, tokens: torch.Tensor) -> tuple[dict, dict]:
    """Per row (of the groups that asked): log p(chosen) and the top-k (id, log p) pairs."""
    chosen, top = {}, {}
    for start, (values, k) in logprobs.items():
        picked = values.gather(1, tokens[start:start + len(values), None])[:, 0].tolist()
        best = values.topk(k, dim=-1) if k else None
        for i, lp in enumerate(picked):
            chosen[start + i] = lp
            top[start + i] = ([] if best is None else
                              list(zip(best.indices[i].tolist(), best.values[i].tolist(), strict=True)))
    return chosen, top


class Engine:
    def __init__(self, model: Transformer, tokenizer: Tokenizer, compile: bool = False):
        """compile=True decodes through `torch.compile` of the model's `decode_step` with static shapes: the rows
        padded to a bucket of ROW_BUCKETS (up to 64; more run eagerly) and every cache position attended to under
        the mask, so it compiles once per (bucket, power-of-two cache length) met (tens of seconds each, at most
        `compile_bound`), then runs without Python between the ops (docs/inference.md). Prefills run eagerly. On an
        AVX-512 CPU, products of up to 64 fp32 rows (6 bf16) run through the few-rows kernel
        (model/kernels/few_rows.py; one compiled row takes a fused multiply-reduce instead), eager or compiled,
        with weights packed for this engine: an engine decodes the weights it was given, so make a new one after
        changing them. A diffusion model is sampled by `infer.diffusion.DiffusionEngine` instead (`engine_for`
        chooses)."""
        if model.config.is_diffusion:
            raise MiniMindError("a diffusion model does not decode left to right; sample it with DiffusionEngine "
                                "(minimind.infer.engine_for chooses the engine)")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.device = model.lm_head.weight.device
        self._packs = {}            # the few-rows kernel's packed weights (model/kernels/few_rows.py), for this engine
        self._compiled_step = torch.compile(model.decode_step, dynamic=False, fullgraph=True) if compile else None
        self.compiled_shapes: set[tuple[int, int]] = set()      # (rows, cache capacity) compiled for so far
        if compile:
            pack_weights(model, self._packs)

    def _slots(self, rows: int) -> int:
        """The rows a decode step runs for `rows` live ones: their compiled bucket, or themselves (eager)."""
        if self._compiled_step is None or rows > ROW_BUCKETS[-1]:
            return rows
        return next(b for b in ROW_BUCKETS if b >= rows)

    def compiled_decode(self, input_ids: torch.Tensor, positions: torch.Tensor, key_mask: torch.Tensor,
                        cache: KVCache) -> torch.Tensor:
        """The compiled `decode_step` (rows a bucket, `cache.length` its capacity): logits [rows, vocab]."""
        self.compiled_shapes.add((len(input_ids), cache.max_len))
        limit = compile_bound(self.model.config.max_position_embeddings)
        with torch._dynamo.config.patch(recompile_limit=limit, accumulated_recompile_limit=max(256, limit)):
            return self._compiled_step(input_ids, positions, key_mask, cache)

    # ---- public API -------------------------------------------------------------------------------------------

    def generate(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams],
                 images: list[list] | None = None, audios: list[list] | None = None) -> list[list[Completion]]:
        """All completions: [prompt][sample] (params: one for all prompts, or one per prompt; images / audios: per
        prompt, its images or clips in order)."""
        batch = self.start(prompts, params, images=images, audios=audios)
        rows = list(batch.rows)
        while batch:
            batch.step()
        outs = (row.out for row in rows)
        return [list(itertools.islice(outs, p.n)) for p in (params if isinstance(params, list)
                                                           else [params] * len(prompts))]

    def stream(self, prompts: list[list[int]], params: SamplingParams,
               images: list[list] | None = None, audios: list[list] | None = None) -> Iterator[list[Delta]]:
        """Per step, a Delta for every row still running at the start of the step."""
        batch = self.start(prompts, params, images=images, audios=audios)
        while batch:
            yield batch.step()

    def chat_prompt(self, messages: list[dict], tools: list[dict] | None = None,
                    enable_thinking: bool = False, audios: list | None = None) -> list[int]:
        """The generation prompt; a vision model's `<image>` markers become its runs of <|image_pad|>, an omni
        model's `<audio>` markers the runs of `audios` (their log-mels, in order)."""
        vision = getattr(self.model, "vision", None)
        if vision is not None:
            messages = expand_image_markers(messages, vision.image_tokens)
        if getattr(self.model, "audio", None) is not None:
            messages = expand_audio_markers(messages, [m.shape[-1] for m in audios or []])
        return self.tokenizer.render_chat(messages, tools, add_generation_prompt=True,
                                          enable_thinking=enable_thinking)[0]

    def chat(self, messages: list[dict], params: SamplingParams, tools: list[dict] | None = None,
             enable_thinking: bool = False, images: list | None = None,
             audios: list | None = None) -> list[tuple[Completion, ParsedOutput]]:
        """Reply to a conversation: each sample's completion and its parse (reasoning, content, tool calls).
        `images`: one per `<image>` marker of the messages, in order; `audios` (log-mels) one per `<audio>`."""
        prompt = self.chat_prompt(messages, tools, enable_thinking, audios)
        completions = self.generate([prompt], params, images=[images or []], audios=[audios or []])[0]
        return [(c, parse_output(c.text)) for c in completions]

    def start(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams],
              handles: list[Hashable] | None = None, images: list[list] | None = None,
              audios: list[list] | None = None) -> Batch:
        """Prefill the prompts into a Batch of n rows per prompt: a common prefix of ≥ SHARED_PREFIX_MIN tokens
        once, then the rest in one left-padded forward (a sliding-window model: a window at a time, no shared
        prefix). Each prompt may have its own params (the server batches requests); rows report `handles[i]`
        (default: i) and index i·n + j (with handles given: j). `images[i]`: prompt i's images (vision models);
        `audios[i]`: its clips' log-mels [n_mels, F] (omni models)."""
        *_, batch = self.prefill(prompts, params, handles, images, audios)
        return batch

    @torch.inference_mode()
    def prefill(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams],
                handles: list[Hashable] | None = None, images: list[list] | None = None,
                audios: list[list] | None = None, chunk: int | None = None) -> Iterator[Batch | None]:
        """`start`, a forward at a time: yields None after each forward of at most `chunk` positions per row (the
        shared prefix, then the rest; all at once when None, or with images or audio), then the Batch. A caller
        decodes other rows between the forwards, so a long prompt never stalls them (the server's scheduler)."""
        params = params if isinstance(params, list) else [params] * len(prompts)
        for p in params:
            self.check_params(p)
        self.check_prompts(prompts)
        extra = self._media(prompts, images, audios)
        config, device = self.model.config, self.device
        rows = self._rows(prompts, params, handles)

        B, longest = len(prompts), max(map(len, prompts))
        # images are spliced in one forward; a sliding window counts cache positions and DeltaNet's convolution
        # reads the inputs just before, so with either, padding may only come first
        shared = _shared_prefix(prompts) if not extra and not (config.is_windowed or config.is_hybrid) else 0
        tails = [p[shared:] for p in prompts]
        width = longest - shared
        ids = torch.full((B, width), self.tokenizer.pad_id, dtype=torch.long)
        key_mask = torch.ones((B, _capacity(longest + 1)), dtype=torch.bool)
        for i, tail in enumerate(tails):                          # left padding (after the shared prefix)
            ids[i, width - len(tail):] = torch.tensor(tail)
            key_mask[i, shared:shared + width - len(tail)] = False
        ids, key_mask = ids.to(device), key_mask.to(device)
        padded = any(len(p) != longest for p in prompts)
        cache = KVCache(config, 1 if shared else B, key_mask.shape[1], device=device,   # bf16 under bf16 autocast:
                        dtype=autocast_dtype(self.model.model.embed_tokens.weight))   # half the bytes per step
        chunk = chunk if chunk and not extra else max(width, shared)
        if shared:                                                # once, then copied to every row
            prefix = torch.tensor([prompts[0][:shared]], device=device)
            for s in range(0, shared, chunk):
                with decoding(self._packs):
                    self.model(prefix[:, s:s + chunk], cache=cache, logits_to_keep=1)
                yield None
            cache.repeat_rows(torch.tensor([B], device=device))
        # a windowed model prefills a window at a time through its rings: memory stays bounded by the window
        step = min(chunk, config.sliding_window) if config.is_windowed and not extra else chunk
        for s in range(0, width, step):
            if s:
                yield None
            end = shared + min(s + step, width)
            with decoding(self._packs):
                logits = self.model(ids[:, s:s + step], attention_mask=key_mask[:, :end].long() if padded else None,
                                    cache=cache, logits_to_keep=1, **extra).logits[:, -1].float()
        seen = torch.zeros((B, config.vocab_size), dtype=torch.bool, device=device)
        seen.scatter_(1, ids, True)
        seen[:, prompts[0][:shared]] = True
        if padded:
            seen[:, self.tokenizer.pad_id] = seen[:, self.tokenizer.pad_id] & torch.tensor(
                [self.tokenizer.pad_id in p for p in prompts], device=device)
        positions = torch.tensor([[len(p)] for p in prompts], device=device)
        repeats = torch.tensor([p.n for p in params], device=device)
        if len(rows) != B:                                        # share the prefill among the samples
            cache.repeat_rows(repeats)
            key_mask, logits, seen, positions = (t.repeat_interleave(repeats, dim=0)
                                                 for t in (key_mask, logits, seen, positions))
        yield Batch(self, rows, cache, key_mask, padded, positions, [longest] * len(rows), logits, seen)

    def check_params(self, params: SamplingParams) -> None:
        params.validate()

    def check_prompts(self, prompts: list[list[int]]) -> None:
        context, vocab = self.model.config.max_position_embeddings, self.model.config.vocab_size
        if not prompts or any(not p for p in prompts):
            raise MiniMindError("empty prompt")
        longest = max(map(len, prompts))
        if longest >= context:
            raise MiniMindError(f"the prompt has {longest} tokens; the model's context is {context} tokens "
                                "(leave room for the reply)")
        if any(t < 0 or t >= vocab for p in prompts for t in p):
            raise MiniMindError(f"prompt token ids must be in 0..{vocab - 1}")

    def check_images(self, prompts: list[list[int]], images: list[list] | None) -> None:
        """Refuse images for a text-only model, and a prompt whose <|image_pad|> count is not its images' tokens."""
        vision = getattr(self.model, "vision", None)
        if vision is None:
            if images and any(images):
                raise MiniMindError("this model reads no images (it is not a vision-language model)")
            return
        images = images or [[] for _ in prompts]
        if len(images) != len(prompts):
            raise ValueError("images: one list per prompt")
        for i, (prompt, own) in enumerate(zip(prompts, images, strict=True)):
            check_image_tokens(prompt, len(own), vision,
                               where=f"prompt {i}" if len(prompts) > 1 else "the prompt")

    def check_audios(self, prompts: list[list[int]], audios: list[list] | None) -> None:
        """Refuse clips for a model that does not hear, and a prompt whose <|audio_pad|> count is not its clips'."""
        audio = getattr(self.model, "audio", None)
        if audio is None:
            if audios and any(audios):
                raise MiniMindError("this model hears no audio (it is not an omni model)")
            return
        audios = audios or [[] for _ in prompts]
        if len(audios) != len(prompts):
            raise ValueError("audios: one list per prompt")
        for i, (prompt, own) in enumerate(zip(prompts, audios, strict=True)):
            check_audio_tokens(prompt, [m.shape[-1] for m in own], audio,
                               where=f"prompt {i}" if len(prompts) > 1 else "the prompt")

    def _media(self, prompts: list[list[int]], images: list[list] | None, audios: list[list] | None) -> dict:
        """The model inputs beside the tokens: the prompts' images as pixel values [N, 3, S, S], or their clips as
        log-mels [N, n_mels, F] with frames [N], in prompt order ({}: none)."""
        self.check_images(prompts, images)
        self.check_audios(prompts, audios)
        arrays = [a for own in images or [] for a in own]
        clips = [m for own in audios or [] for m in own]
        if arrays:
            return {"pixel_values": pixel_values(torch.from_numpy(np.stack(arrays)).to(self.device), self.model.vision)}
        if clips:
            mels, frames = batch_mels(clips)
            return {"mels": mels.to(self.device), "frames": frames.to(self.device)}
        return {}

    def _rows(self, prompts: list[list[int]], params: list[SamplingParams],
              handles: list[Hashable] | None) -> list[Row]:
        """n rows per prompt, in order: each with its request (params, stop ids, handle), the tokens the request or
        the context leaves it, and its generator; index i·n + j (with handles given: j)."""
        rows = []
        for i, (prompt, p) in enumerate(zip(prompts, params, strict=True)):
            request = Request(p, set(p.stop_token_ids) | (set() if p.ignore_eos else {self.tokenizer.eos_id}),
                              i if handles is None else handles[i])
            budget = min(p.max_new_tokens, self.model.config.max_position_embeddings - len(prompt))
            rows += [Row(self.tokenizer, request, j if handles is not None else i * p.n + j, budget, g)
                     for j, g in enumerate(self._generators(p))]
        return rows

    def _draws(self, params: SamplingParams) -> bool:
        """Whether sampling with `params` draws random numbers (then each sample gets a generator)."""
        return params.temperature != 0

    def _generators(self, params: SamplingParams) -> list[torch.Generator | None]:
        """One generator per sample: seed + j when seeded, else an independent random stream."""
        if not self._draws(params):
            return [None] * params.n
        seeds = ([params.seed + j for j in range(params.n)] if params.seed is not None
                 else torch.randint(0, 2**62, (params.n,)).tolist())
        return [torch.Generator(device=self.device).manual_seed(s) for s in seeds]
