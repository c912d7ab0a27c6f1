"""Log-likelihood of text under a model: the one primitive behind bits per byte, multiple choice and the
lm-eval adapter.

A request is a (context, continuation) pair. Following lm-evaluation-harness, whitespace at the end of the
context moves to the start of the continuation, the whole string is encoded once and the continuation's
tokens are those past the context's own encoding (so BPE merges across the boundary are the ones the model
saw in training), and the context starts with BOS. The answer is Σ log p(continuation token | prefix) in fp32
and whether every continuation token is the argmax (greedy).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from minimind.model.loss import token_logprobs
from minimind.tokenizer import Tokenizer


class Scorer:
    def __init__(self, model, tokenizer: Tokenizer, window: int = 2048, batch_tokens: int = 16384):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.window = min(window, model.config.max_position_embeddings)   # longest input of one forward
        self.batch_tokens = batch_tokens
        self.device = next(model.parameters()).device
        self.prefix = [tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id]

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self.tokenizer.encode(context + continuation)
        n = len(self.tokenizer.encode(context)) if context else 0
        return self.prefix + whole[:n], whole[n:]

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        return self.score([self.encode_pair(c, x) for c, x in requests])

    def rolling(self, text: str, stride: int | None = None) -> float:
        """Σ log p over every token of `text` (the first one given BOS), in windows of at most `window`
        inputs that each score the next `stride` tokens (default: the window, as lm-eval's rolling
        log-likelihood); a smaller stride gives each scored token more context."""
        return sum(lp for lp, _ in self.score(self.windows(self.tokenizer.encode(text), stride)))

    def windows(self, tokens: list[int], stride: int | None = None) -> list[tuple[list[int], list[int]]]:
        """(context, continuation) token pairs covering every token once: targets [s, e] of seq = prefix +
        tokens are scored from the input seq[max(0, e - window) : e]."""
        stride = min(stride or self.window, self.window)
        seq, pairs = self.prefix + list(tokens), []
        for s in range(1, len(seq), stride):
            e = min(len(seq) - 1, s + stride - 1)
            a = max(0, e - self.window)
            pairs.append((seq[a:s], seq[s:e + 1]))
        return pairs

    def by_length(self, items: list, width) -> Iterator[list]:
        """`items` longest first (by `width(item)`, the tokens one forward reads per row), in batches of at most
        batch_tokens tokens (one item at least)."""
        items = sorted(items, key=lambda item: -width(item))
        start = 0
        while start < len(items):
            size = max(1, min(len(items) - start, self.batch_tokens // max(width(items[start]), 1)))
            yield items[start:start + size]
            start += size

    @torch.no_grad()
    def score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(Σ log p(continuation | context), greedy?) per (context, continuation) of token ids, batched by
        length (longest first, at most batch_tokens per forward); a context longer than the window loses
        its oldest tokens."""
        out: list[tuple[float, bool]] = [(0.0, True)] * len(pairs)
        rows = []
        for i, (context, continuation) in enumerate(pairs):
            if not continuation:
                continue
            seq = (list(context) + list(continuation))[-(self.window + 1):]
            rows.append((i, seq, len(continuation)))
        for batch in self.by_length(rows, lambda r: len(r[1]) - 1):
            width = len(batch[0][1]) - 1
            ids = torch.zeros(len(batch), width + 1, dtype=torch.long)
            for j, (_, seq, _) in enumerate(batch):
                ids[j, :len(seq)] = torch.tensor(seq)
            ids = ids.to(self.device)
            logits = self.model(ids).logits
            logps = token_logprobs(logits, ids)                  # [rows, width + 1]; right padding is never seen
            for j, (i, seq, n) in enumerate(batch):
                end = len(seq)
                greedy = logits[j, end - 1 - n:end - 1].argmax(-1) == ids[j, end - n:end]
                out[i] = (logps[j, end - n:end].sum().item(), bool(greedy.all().item()))
        return out


class DiffusionScorer(Scorer):
    """Scorer for a masked-diffusion model, whose likelihood has no closed form: Σ log p(continuation | context) is
    estimated by the ELBO's Monte-Carlo lower bound (LLaDA eq. 6), with `samples` draws per request:

        log p(c | x) ≥ E_k E_masks [ (n / k) · Σ_{i masked} log p_θ(c_i | x, c with k of its n tokens masked) ]

    k ~ U{1..n} stratified over the draws (draw j takes k from the j-th of `samples` equal slices of [0, 1)),
    the masked positions uniform among the continuation's, everything from a generator seeded with `seed`, so a
    figure repeats exactly. greedy: every continuation token is the argmax when the whole continuation is masked.
    """

    def __init__(self, model, tokenizer: Tokenizer, window: int = 2048, batch_tokens: int = 16384, samples: int = 32,
                 seed: int = 0):
        super().__init__(model, tokenizer, window, batch_tokens)
        self.samples, self.seed = samples, seed
        self.mask_id = model.config.mask_token_id

    @torch.no_grad()
    def score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        values, greedy = self.score_samples(pairs)
        return [(float(v.mean()), g) for v, g in zip(values, greedy, strict=True)]

    @torch.no_grad()
    def score_samples(self, pairs: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, list[bool]]:
        """([pairs, samples] fp64: each draw's estimate of Σ log p(continuation | context), greedy per pair)."""
        generator = torch.Generator().manual_seed(self.seed)
        rows, weights = [], []                       # one noised sequence per (pair, draw), then one all-masked
        for context, continuation in pairs:
            n = len(continuation)
            seq = (list(context) + list(continuation))[-self.window:]
            start = len(seq) - n
            slices = (torch.arange(self.samples) + torch.rand(self.samples, generator=generator)) / self.samples
            for k in (slices * n).ceil().clamp(1, max(n, 1)).long().tolist() + [n]:
                chosen = torch.randperm(n, generator=generator)[:k] + start
                rows.append((seq, chosen.tolist()))
                weights.append(n / k if k else 0.0)
        logps = self._masked_logps(rows)
        values = torch.zeros(len(pairs), self.samples, dtype=torch.float64)
        greedy = []
        per_pair = self.samples + 1
        for i, (_, continuation) in enumerate(pairs):
            for j in range(self.samples):
                r = i * per_pair + j
                values[i, j] = weights[r] * logps[r][0]
            greedy.append(bool(logps[i * per_pair + self.samples][1]) if continuation else True)
        return values, greedy

    def _masked_logps(self, rows: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """Per (sequence, masked positions): Σ log p(true token) over the masked positions, and whether each is
        the argmax there; batched by length, right-padded (the padding is masked out of attention)."""
        out: list[tuple[float, bool]] = [(0.0, True)] * len(rows)
        for batch in self.by_length(range(len(rows)), lambda r: len(rows[r][0])):
            width = len(rows[batch[0]][0])
            ids = torch.full((len(batch), width), self.tokenizer.pad_id, dtype=torch.long)
            keep = torch.zeros((len(batch), width), dtype=torch.long)
            noised = torch.zeros((len(batch), width), dtype=torch.bool)
            for b, r in enumerate(batch):
                seq, chosen = rows[r]
                ids[b, :len(seq)], keep[b, :len(seq)] = torch.tensor(seq), 1
                noised[b, chosen] = True
            targets = ids.clone()
            ids[noised] = self.mask_id
            logits = self.model(ids.to(self.device), attention_mask=keep.to(self.device)).logits.float().cpu()
            logits[..., self.mask_id] = float("-inf")
            logp = logits.log_softmax(-1).gather(-1, targets[..., None])[..., 0]
            right = logits.argmax(-1) == targets
            for b, r in enumerate(batch):
                out[r] = (logp[b][noised[b]].sum().item(), bool(right[b][noised[b]].all().item()))
        return out


def scorer_for(model, tokenizer: Tokenizer, window: int = 2048, samples: int = 32) -> Scorer:
    """The exact Scorer for a causal model, the ELBO's DiffusionScorer (`samples` draws) for a diffusion one."""
    if model.config.is_diffusion:
        return DiffusionScorer(model, tokenizer, window=window, samples=samples)
    return Scorer(model, tokenizer, window=window)
