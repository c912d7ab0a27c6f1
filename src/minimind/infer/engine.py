"""The generation engine: every caller (chat, server, evaluation, RL rollouts) generates through it.

    prompts [B] ─ left-pad ─ prefill [B, L] into a static KV cache ─ repeat each row n times (shared prefill)
    loop: sample the next token of every row ─ detokenise incrementally ─ check stops ─ decode step [B·n, 1]

Rows finish on a stop token, a stop string or max_new_tokens. Text is emitted only when it is complete UTF-8
and cannot be the beginning of a stop string, so a stream never shows half a character or half a stop.
One host sync per step (the sampled ids).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from minimind.errors import MiniMindError
from minimind.infer.sampling import SamplingParams, apply_penalties, sample
from minimind.model.cache import KVCache
from minimind.model.transformer import Transformer
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
    index: int                      # row: prompt i, sample j → i·n + j
    text: str
    token_id: int
    finish_reason: str | None = None


class _Row:
    """One sequence's detokenisation and stop logic."""

    def __init__(self, tokenizer: Tokenizer, params: SamplingParams, stop_ids: set[int], want_logprobs: bool,
                 max_new_tokens: int):
        self.tokenizer, self.stops, self.stop_ids = tokenizer, params.stop, stop_ids
        self.max_new_tokens = max_new_tokens        # the request's, or what the context leaves this prompt
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


class Engine:
    def __init__(self, model: Transformer, tokenizer: Tokenizer, compile: bool = False):
        """compile=True decodes a single sequence (one prompt, n = 1) through `torch.compile` of the model's
        static-shape `decode_step`: it compiles once per power-of-two cache length (tens of seconds the first
        time), then decodes about twice as fast on CPU (docs/inference.md). Batches, where the compiled step
        measured slower, and every prefill run eagerly."""
        self.model, self.tokenizer = model.eval(), tokenizer
        self.device = model.lm_head.weight.device
        self._compiled_step = torch.compile(model.decode_step, dynamic=False) if compile else None

    # ---- public API -------------------------------------------------------------------------------------------

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        """All completions: [prompt][sample]."""
        for rows, _ in self._steps(prompts, params):       # noqa: B007 — the rows after the last step
            pass
        completions = [row.out for row in rows]
        return [completions[i * params.n:(i + 1) * params.n] for i in range(len(prompts))]

    def stream(self, prompts: list[list[int]], params: SamplingParams) -> Iterator[list[Delta]]:
        """Per step, the rows' new text (empty for rows that emitted nothing or are done)."""
        for _, deltas in self._steps(prompts, params):
            yield deltas

    def chat_prompt(self, messages: list[dict], tools: list[dict] | None = None,
                    enable_thinking: bool = False) -> list[int]:
        return self.tokenizer.render_chat(messages, tools, add_generation_prompt=True,
                                          enable_thinking=enable_thinking)[0]

    def chat(self, messages: list[dict], params: SamplingParams, tools: list[dict] | None = None,
             enable_thinking: bool = False) -> list[tuple[Completion, ParsedOutput]]:
        """Reply to a conversation: each sample's completion and its parse (reasoning, content, tool calls)."""
        prompt = self.chat_prompt(messages, tools, enable_thinking)
        return [(c, parse_output(c.text)) for c in self.generate([prompt], params)[0]]

    # ---- the loop -----------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def _steps(self, prompts: list[list[int]], params: SamplingParams):
        params.validate()
        config, device, n = self.model.config, self.device, params.n
        if not prompts or any(not p for p in prompts):
            raise MiniMindError("empty prompt")
        longest = max(map(len, prompts))
        compiled = self._compiled_step is not None and len(prompts) * n == 1
        if longest >= config.max_position_embeddings:
            raise MiniMindError(f"the prompt has {longest} tokens; the model's context is "
                                f"{config.max_position_embeddings} (leave room for the reply)")
        if any(t < 0 or t >= config.vocab_size for p in prompts for t in p):
            raise MiniMindError(f"prompt token ids must be in 0..{config.vocab_size - 1}")
        # each row may use what the context leaves its own prompt; the loop runs for the longest budget
        budgets = [min(params.max_new_tokens, config.max_position_embeddings - len(p)) for p in prompts]
        max_new = max(budgets)
        stop_ids = set(params.stop_token_ids) | (set() if params.ignore_eos else {self.tokenizer.eos_id})
        rows = [_Row(self.tokenizer, params, stop_ids, params.logprobs is not None, budget)
                for budget in budgets for _ in range(n)]

        B, R = len(prompts), len(prompts) * n
        ids = torch.full((B, longest), self.tokenizer.pad_id, dtype=torch.long)
        cache_len = longest + max_new
        if compiled:                             # few distinct shapes → few compilations
            cache_len = max(128, 1 << (cache_len - 1).bit_length())
        mask = torch.zeros((B, cache_len), dtype=torch.long)
        for i, p in enumerate(prompts):                           # left padding
            ids[i, longest - len(p):] = torch.tensor(p)
            mask[i, longest - len(p):longest + max_new] = 1
        ids, mask = ids.to(device), mask.to(device)
        padded = any(len(p) != longest for p in prompts)

        dtype = self.model.lm_head.weight.dtype
        cache = KVCache(config, B, cache_len, device=device, dtype=dtype)
        logits = self.model(ids, attention_mask=mask[:, :longest] if padded else None, cache=cache,
                            logits_to_keep=1).logits[:, -1].float()
        if n > 1:                                                  # share the prefill among the samples
            cache.repeat_rows(n)
            logits, mask, ids = (t.repeat_interleave(n, dim=0) for t in (logits, mask, ids))

        if compiled:
            cache.write_at = torch.tensor([longest], device=device)
            positions = torch.tensor([len(p) for p in prompts], device=device).repeat_interleave(n)[:, None]
            key_mask = mask.bool()
        generators = self._generators(params, B)
        penalties = params.repetition_penalty != 1 or params.presence_penalty or params.frequency_penalty
        if penalties:
            seen = torch.zeros((R, config.vocab_size), dtype=torch.bool, device=device)
            seen.scatter_(1, ids, True)
            if padded:
                seen[:, self.tokenizer.pad_id] = False
            counts = torch.zeros((R, config.vocab_size), device=device)
        for step in range(max_new):
            logprobs = logits.log_softmax(dim=-1) if params.logprobs is not None else None
            if penalties:
                logits = apply_penalties(logits, seen, counts, params)
            tokens = sample(logits, params, generators)
            chosen, top = self._logprobs(logprobs, tokens, params.logprobs)
            deltas = []
            for r, token in enumerate(tokens.tolist()):            # the step's one host sync
                row = rows[r]
                if row.out.finish_reason is None:
                    text = row.push(token, chosen[r] if chosen else None, top[r] if top else None)
                    deltas.append(Delta(r, text, token, row.out.finish_reason))
            yield rows, deltas
            if all(row.out.finish_reason for row in rows):
                return
            if penalties:
                seen.scatter_(1, tokens[:, None], True)
                counts.scatter_add_(1, tokens[:, None], torch.ones_like(tokens[:, None], dtype=counts.dtype))
            if compiled:
                logits = self._compiled_step(tokens[:, None], positions, key_mask, cache).float()
                cache.write_at += 1
                positions += 1
            else:
                position = longest + step
                logits = self.model(tokens[:, None], attention_mask=mask[:, :position + 1] if padded else None,
                                    cache=cache, logits_to_keep=1).logits[:, -1].float()

    def _generators(self, params: SamplingParams, prompts: int) -> list[torch.Generator | None]:
        if params.temperature == 0:
            return [None] * (prompts * params.n)
        if params.seed is not None:                 # sample j of every prompt: seed + j
            seeds = [params.seed + j for _ in range(prompts) for j in range(params.n)]
        else:                                       # unseeded: every row its own random stream
            seeds = torch.randint(0, 2**62, (prompts * params.n,)).tolist()
        return [torch.Generator(device=self.device).manual_seed(s) for s in seeds]

    @staticmethod
    def _logprobs(logprobs, tokens, k):
        if logprobs is None:
            return None, None
        chosen = logprobs.gather(1, tokens[:, None])[:, 0].tolist()
        if not k:
            return chosen, [[] for _ in chosen]
        values, indices = logprobs.topk(k, dim=-1)
        top = [list(zip(i, v, strict=True)) for i, v in zip(indices.tolist(), values.tolist(), strict=True)]
        return chosen, top
